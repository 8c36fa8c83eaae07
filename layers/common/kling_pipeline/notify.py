"""Publishes each job's single terminal notification (CONTRACT §5) to SNS."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .ledger import JobLedger
from .models import Notification
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
        if not self._ledger.claim_terminal(notification.job_id, notification.status):
            logger.info(
                "terminal notification already sent",
                extra={"job_id": notification.job_id, "status": notification.status},
            )
            return False
        self._sns.publish(
            TopicArn=self._topic,
            Message=json.dumps(notification.to_json(), separators=(",", ":")),
            MessageAttributes={
                "status": {"DataType": "String", "StringValue": notification.status},
                "job_id": {"DataType": "String", "StringValue": notification.job_id},
            },
        )
        self._ledger.mark_notified(notification.job_id, notification.status)
        metrics.add_metric(name=METRIC_BY_STATUS[notification.status], unit="Count", value=1)
        logger.info(
            "notification published",
            extra={"job_id": notification.job_id, "status": notification.status},
        )
        return True
