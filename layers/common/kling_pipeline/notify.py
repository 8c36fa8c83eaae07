"""Publishes each job's single terminal notification to SNS, with its filter attributes."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from .errors import TransientError
from .job.ledger import JobLedger
from .job.notification import Notification
from .observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

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
                Message=json.dumps(notification.to_json(), separators=(",", ":")),
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
                f"could not publish the {notification.status} notification: {exc}",
                code="notify_failed",
            ) from None
        self._ledger.mark_notified(notification.job_id)
        metrics.add_metric(name=METRIC_BY_STATUS[notification.status], unit="Count", value=1)
        logger.info(
            "notification published",
            extra={"job_id": notification.job_id, "status": notification.status},
        )
        return True
