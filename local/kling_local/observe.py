"""What a run shows: every notification as published, job states, progress lines on stderr."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from kling_pipeline.job.record import JobRecord

from .provision import ACCOUNT, PREFIX, REGION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

TERMINAL = ("completed", "failed", "rejected")
#: Called with every notification a tap collects: how tests check each one against its schema.
NOTIFICATION_LISTENERS: list[Callable[[dict[str, Any]], None]] = []


class NotificationTap:
    """A queue subscribed to every topic with raw delivery: it collects each SNS message exactly
    as a subscriber would receive it."""

    def __init__(self, sqs: SQSClient, sns: SNSClient, topic_arns: list[str]) -> None:
        name = f"{PREFIX}-notification-tap"
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName=name)["QueueUrl"]
        for topic_arn in topic_arns:
            sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
                Attributes={"RawMessageDelivery": "true"},
            )
        self.notifications: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        """Takes every message waiting on the tap; returns the new notifications."""
        new: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                break
            for message in messages:
                new.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        self.notifications.extend(new)
        for note in new:
            for listener in NOTIFICATION_LISTENERS:
                listener(note)
        return new


def job_states(dynamodb: DynamoDBClient, table: str) -> dict[str, str]:
    """Each job's state in the jobs table (its terminal status once it has one)."""
    states: dict[str, str] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page.get("Items", []):
            if not item["pk"]["S"].startswith("job#"):
                continue
            record = JobRecord.from_item(item)
            states[record.job_id] = record.status
    return states


def describe(note: dict[str, Any]) -> str:
    """One notification in a few words: where the video went, or why there is none."""
    if note["status"] == "completed":
        return "completed -> " + ", ".join(str(o.get("uri")) for o in note.get("outputs", []))
    error = note.get("error") or {}
    return f"{note['status']} ({error.get('code')}: {error.get('message')})"


class Progress:
    """One line per job state change, on the given stream (nothing when it is None)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._seen: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def line(self, job_id: str, text: str) -> None:
        if self.stream is not None:
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}] job {job_id}: {text}", file=self.stream, flush=True)

    def notified(self, notes: list[dict[str, Any]]) -> None:
        for note in notes:
            self.line(note["job_id"], describe(note))

    def states(self, states: dict[str, str]) -> None:
        """Reports the states that changed; terminal ones are reported by their notification."""
        for job_id, state in states.items():
            if self._seen.get(job_id) != state and state not in TERMINAL:
                label = {"running": "waiting for the video (workflow running)"}.get(state, state)
                self.line(job_id, label)
            self._seen[job_id] = state
