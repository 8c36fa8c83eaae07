"""The submit ports over AWS: SQS queues, Step Functions, the prompts bucket."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import TransientError
from ..job.prompt_file import PromptFileRejected
from ..job.workflow import WorkflowState
from ..observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )
    from mypy_boto3_stepfunctions import SFNClient

#: The most messages one SendMessageBatch call takes.
SQS_BATCH = 10


def _attributes(values: dict[str, str]) -> dict[str, MessageAttributeValueTypeDef]:
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


class SqsQueue:
    """The job queue (fan-out, redelivery delay) and its dead-letter queue (parking)."""

    def __init__(self, sqs: SQSClient, *, job_queue_url: str, dead_letter_queue_url: str) -> None:
        self._sqs = sqs
        self._jobs = job_queue_url
        self._dead_letters = dead_letter_queue_url

    def park(self, body: str, attributes: dict[str, str]) -> None:
        try:
            self._sqs.send_message(
                QueueUrl=self._dead_letters,
                MessageBody=body,
                MessageAttributes=_attributes(attributes),
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"could not park the message: {exc}", code="park_failed") from None

    def enqueue(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        for start in range(0, len(messages), SQS_BATCH):
            batch: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "MessageBody": body, "MessageAttributes": _attributes(attributes)}
                for i, (body, attributes) in enumerate(messages[start : start + SQS_BATCH])
            ]
            answer = self._sqs.send_message_batch(QueueUrl=self._jobs, Entries=batch)
            if answer.get("Failed"):
                raise TransientError(f"could not queue {len(answer['Failed'])} job messages")

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        if not receipt_handle or not self._jobs:
            return
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._jobs, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
            )
        except ClientError:
            logger.warning("could not shorten the retry delay")


class StepFunctionsWorkflows:
    """Starts the job state machine, one execution per job id (its name)."""

    def __init__(self, sfn: SFNClient, state_machine_arn: str) -> None:
        self._sfn = sfn
        self._arn = state_machine_arn

    def start(self, job_id: str, state: WorkflowState) -> str:
        try:
            answer = self._sfn.start_execution(
                stateMachineArn=self._arn, name=job_id, input=json.dumps(state.to_dict())
            )
            return answer["executionArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise TransientError(f"could not start the workflow: {exc}") from None
        return f"{self._arn}:{job_id}".replace(":stateMachine:", ":execution:")


class S3PromptFiles:
    """Reads prompt files, never more than the configured limit."""

    def __init__(self, s3: S3Client, max_bytes: int) -> None:
        self._s3 = s3
        self._limit = max_bytes

    def read(self, bucket: str, key: str, size: int) -> bytes:
        if size > self._limit:
            raise PromptFileRejected(f"{key}: file is {size} bytes, the limit is {self._limit}")
        try:
            data: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read(self._limit + 1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise PromptFileRejected(
                    f"{key}: the file was deleted before it was read"
                ) from None
            raise TransientError(f"could not read {key}: {code}") from None
        return data
