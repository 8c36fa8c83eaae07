"""The local stack as a user touches it: what goes in (queue, uploads), what comes out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .export import export
from .observe import NotificationTap
from .provision import EventSourceMapping, LocalStack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


class StackView:
    """Resource names, inputs and outputs of a provisioned local stack."""

    stack: LocalStack
    tap: NotificationTap
    sqs: SQSClient
    s3: S3Client

    @property
    def names(self) -> dict[str, str]:
        return self.stack.names

    @property
    def queue_urls(self) -> dict[str, str]:
        return self.stack.queue_urls

    @property
    def pollers(self) -> list[EventSourceMapping]:
        return self.stack.pollers

    @property
    def state_machine_arn(self) -> str:
        return self.stack.state_machine_arn

    @property
    def job_queue_url(self) -> str:
        return self.queue_urls["JobQueue"]

    @property
    def dlq_url(self) -> str:
        return self.queue_urls["JobDeadLetterQueue"]

    @property
    def prompts_bucket(self) -> str:
        return self.names["PromptsBucket"]

    @property
    def videos_bucket(self) -> str:
        return self.names["VideosBucket"]

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return self.tap.notifications

    def send_message(self, body: str) -> str:
        return self.sqs.send_message(QueueUrl=self.job_queue_url, MessageBody=body)["MessageId"]

    def send_prompt(self, prompt: str, **fields: Any) -> str:
        return self.send_message(json.dumps({"prompt": prompt, **fields}))

    def upload(self, name: str, data: bytes) -> str:
        key = f"prompts/{name}"
        self.s3.put_object(Bucket=self.prompts_bucket, Key=key, Body=data)
        return key

    def objects(self, bucket: str | None = None) -> Iterator[Any]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket or self.videos_bucket):
            yield from page.get("Contents", [])

    def read_object(self, key: str, bucket: str | None = None) -> bytes:
        body = self.s3.get_object(Bucket=bucket or self.videos_bucket, Key=key)["Body"]
        data: bytes = body.read()
        return data

    def incomplete_uploads(self) -> list[Any]:
        answer = self.s3.list_multipart_uploads(Bucket=self.videos_bucket)
        return list(answer.get("Uploads", []))

    def dead_letters(self) -> list[Any]:
        """Everything in the DLQ, left in place: each message is hidden while the queue is read
        (so the next receive returns others), then made visible again."""
        seen: dict[str, Any] = {}
        handles: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                VisibilityTimeout=30,
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                seen[message["MessageId"]] = message
                handles.append(message["ReceiptHandle"])
        for handle in handles:
            self.sqs.change_message_visibility(
                QueueUrl=self.dlq_url, ReceiptHandle=handle, VisibilityTimeout=0
            )
        return list(seen.values())

    def export(self, out_dir: Path) -> list[Path]:
        """Copies every produced object and writes notifications.jsonl."""
        return export(self.s3, self.videos_bucket, self.notifications, out_dir)
