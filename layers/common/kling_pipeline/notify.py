"""Publishes each job's single terminal notification to SNS, with its filter attributes."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from . import strict_json
from .errors import TransientError
from .job.ledger import JobLedger
from .job.notification import Notification
from .observability import logger, metrics
from .redact import redact, redact_tree

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

#: SNS takes 256 KiB per message, attributes included: every notification stays well below.
MAX_MESSAGE_BYTES = 200 * 1024
#: Fields that echo what a sender wrote (or an API answered): clipped when a message is large.
ECHOED = ("input", "metadata", "source", "error", "prompt_enhancement")
#: Character budget per echoed field, first pass then last resort.
ECHO_BUDGETS = (16_384, 2_048)

METRIC_BY_STATUS = {
    "completed": "JobsCompleted",
    "failed": "JobsFailed",
    "rejected": "JobsRejected",
}


class Notifier:
    """Claims the job's terminal status in the ledger, then publishes it with its attributes."""

    def __init__(self, sns: SNSClient, topic_arn: str, ledger: JobLedger) -> None:
        self._sns = sns
        self._topic = topic_arn
        self._ledger = ledger

    def publish_outcome(self, notification: Notification) -> bool:
        """Publishes unless the job already has a terminal notification; True when published."""
        if not self._ledger.claim_terminal(
            notification.job_id, notification.status, notification.error
        ):
            record = self._ledger.get(notification.job_id)
            if record is not None and not record.notified:
                # Another attempt holds the claim and may be publishing right now: retry later
                # rather than publish twice, or report the job done when it may not be.
                raise TransientError(
                    "another attempt is publishing this job's notification",
                    code="notify_in_progress",
                )
            logger.info(
                "terminal notification already sent",
                extra={"job_id": notification.job_id, "status": notification.status},
            )
            return False
        try:
            self._sns.publish(
                TopicArn=self._topic,
                Message=notification_message(notification),
                MessageAttributes={
                    "status": {"DataType": "String", "StringValue": notification.status},
                    "job_id": {"DataType": "String", "StringValue": notification.job_id},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            # Nothing went out: a claim left behind would silence the retry, or the failure
            # notification the workflow sends instead, so the job would never be reported.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._ledger.release_terminal(notification.job_id, notification.status)
            raise TransientError(
                redact(f"could not publish the {notification.status} notification: {exc}"),
                code="notify_failed",
            ) from None
        self._ledger.mark_notified(notification.job_id)
        metrics.add_metric(name=METRIC_BY_STATUS[notification.status], unit="Count", value=1)
        logger.info(
            "notification published",
            extra={"job_id": notification.job_id, "status": notification.status},
        )
        return True


def notification_message(notification: Notification) -> str:
    """The SNS message body: strict JSON, secrets masked, under SNS's size limit whatever
    the job echoed (a hostile body, a 90 KB field name, a long API error)."""
    body: dict[str, Any] = redact_tree(notification.to_json())
    text = strict_json.dumps(body)
    for budget in ECHO_BUDGETS:
        if len(text.encode()) <= MAX_MESSAGE_BYTES:
            return text
        body = {
            name: strict_json.clip(value, budget=budget) if name in ECHOED else value
            for name, value in body.items()
        }
        body["truncated"] = True
        text = strict_json.dumps(body)
    if len(text.encode()) <= MAX_MESSAGE_BYTES:
        return text
    # Outputs or extra fields too large on their own: keep what identifies the outcome.
    keep = ("schema", "job_id", "status", "request_id", "model", "error", "cost")
    return strict_json.dumps({name: body.get(name) for name in keep} | {"truncated": True})
