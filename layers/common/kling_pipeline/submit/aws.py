"""The submit ports over AWS: SQS queues, Step Functions, the prompts bucket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .. import strict_json
from ..errors import TransientError
from ..job.prompt_file import PromptFileRejected
from ..job.workflow import WorkflowState
from ..observability import logger
from ..redact import redact

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )
    from mypy_boto3_stepfunctions import SFNClient

    from .intake import PromptUpload

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
            raise TransientError(
                redact(f"could not park the message: {exc}"), code="park_failed"
            ) from None

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
                stateMachineArn=self._arn, name=job_id, input=strict_json.dumps(state.to_dict())
            )
            return answer["executionArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise TransientError(f"could not start the workflow: {exc}") from None
        return f"{self._arn}:{job_id}".replace(":stateMachine:", ":execution:")


#: S3 error codes meaning the named object (or version) is not there to read.
GONE = ("NoSuchKey", "NoSuchVersion", "404", "InvalidArgument")
DENIED = ("AccessDenied", "403")


class S3PromptFiles:
    """Reads prompt files at the version their event names, never more than the limit."""

    def __init__(self, s3: S3Client, max_bytes: int) -> None:
        self._s3 = s3
        self._limit = max_bytes

    def read(self, upload: PromptUpload) -> bytes:
        key = upload.key
        if upload.size > self._limit:
            raise PromptFileRejected(
                f"{key}: file is {upload.size} bytes, the limit is {self._limit}"
            )
        request: dict[str, Any] = {"Bucket": upload.bucket, "Key": key}
        if upload.version_id:
            request["VersionId"] = upload.version_id
        elif upload.etag:
            # No version named (an unversioned bucket): read only the very upload the event
            # names, never a later one that replaced it under the same key.
            request["IfMatch"] = upload.etag
        try:
            return self._get(request)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("PreconditionFailed", "412"):
                return self._earlier_version(upload)
            raise self._failure(key, code) from None

    def _get(self, request: dict[str, Any]) -> bytes:
        data: bytes = self._s3.get_object(**request)["Body"].read(self._limit + 1)
        return data

    def _earlier_version(self, upload: PromptUpload) -> bytes:
        """The upload was replaced before it was read and its event names no version: find
        the version with its eTag (a versioned bucket), else refuse it with the reason."""
        try:
            versions = self._s3.list_object_versions(Bucket=upload.bucket, Prefix=upload.key).get(
                "Versions", []
            )
        except ClientError:
            versions = []
        for version in versions:
            if version.get("Key") == upload.key and version.get("ETag", "").strip(
                '"'
            ) == upload.etag.strip('"'):
                request = {"Bucket": upload.bucket, "Key": upload.key}
                try:
                    return self._get({**request, "VersionId": version["VersionId"]})
                except ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code"))
                    raise self._failure(upload.key, code) from None
        raise PromptFileRejected(
            f"{upload.key}: was replaced by a newer upload before it could be read, and its "
            "event names no version to read; the newer upload runs on its own event"
        )

    @staticmethod
    def _failure(key: str, code: str) -> Exception:
        if code in GONE:
            return PromptFileRejected(
                f"{key}: no such file or version (deleted before it was read, or the event "
                "names a version that does not exist); nothing was run"
            )
        if code in DENIED:
            # Without s3:ListBucket, S3 answers AccessDenied for a missing object as well.
            return PromptFileRejected(
                f"{key}: could not be read (access denied: most often the file was deleted "
                "before it was read); nothing was run"
            )
        return TransientError(f"could not read {key}: {code}")
