"""Intake: one SQS record becomes a Job to admit, a Refusal, or a prompt-file fan-out. No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ..errors import ErrorDetail, ValidationError
from ..job.prompt_file import FileEntry, file_job_id, position_name
from ..job.record import Outcome
from ..job.request import (
    JOB_ID_PATTERN,
    Job,
    echo_of,
    parse_message_body,
    requested_job_id,
)
from ..types import Json
from .refusal import PARKED_JOB_ATTRIBUTE, SOURCE_ATTRIBUTE, Refusal


@dataclass(frozen=True)
class ReceivedMessage:
    """One SQS message as the submit function receives it."""

    message_id: str
    body: str
    receipt_handle: str = ""
    receive_count: int = 1
    #: The job id a redriven message was parked under (its message id is new after a redrive).
    parked_job_id: str | None = None
    #: The raw `kp-source` attribute: the prompt file line this message was fanned out from.
    source_attribute: str | None = None

    @classmethod
    def from_record(cls, record: SQSRecord) -> ReceivedMessage:
        attributes = record.message_attributes
        parked = attributes[PARKED_JOB_ATTRIBUTE]
        source = attributes[SOURCE_ATTRIBUTE]
        parked_id = parked.string_value if parked is not None else None
        return cls(
            message_id=record.message_id,
            body=record.body or "",
            receipt_handle=record.receipt_handle or "",
            receive_count=int(record.attributes.get("ApproximateReceiveCount") or 1),
            parked_job_id=parked_id if parked_id and JOB_ID_PATTERN.match(parked_id) else None,
            source_attribute=source.string_value if source is not None else None,
        )

    @property
    def source(self) -> Json:
        """Where the job came from: its prompt file line, else this SQS message."""
        if self.source_attribute:
            try:
                source = json.loads(self.source_attribute)
            except json.JSONDecodeError:
                source = None
            if isinstance(source, dict) and source.get("type") == "s3":
                return source
        return {"type": "sqs", "message_id": self.message_id}

    @property
    def fallback_job_id(self) -> str:
        """The job id of a message that names none: redeliveries keep their SQS message id,
        so they map to the same job; a redriven message keeps the id it was parked under."""
        return self.parked_job_id or f"msg-{self.message_id}"


@dataclass(frozen=True)
class Admit:
    """A valid job to pay for (at most once per job id)."""

    job: Job
    source: Json
    #: Redriven from the dead-letter queue: a refusal that may be retried gets a new chance.
    redriven: bool


@dataclass(frozen=True)
class PromptUpload:
    """One uploaded prompt file, named by its S3 event."""

    bucket: str
    key: str
    #: Same for duplicate events of one upload, new for a re-upload: part of derived job ids.
    marker: str
    size: int

    @property
    def source(self) -> Json:
        return {"type": "s3", "bucket": self.bucket, "key": self.key}


@dataclass(frozen=True)
class FileFanOut:
    """An S3 event: each named prompt file is read and queued as one message per job."""

    uploads: tuple[PromptUpload, ...]


Intake = Admit | Refusal | FileFanOut


def take_in(message: ReceivedMessage) -> Intake:
    """Decides what a received message is; a job that breaks the contract is refused here."""
    event = _s3_event(message.body)
    if event is not None:
        return event
    try:
        request = parse_message_body(message.body)
    except ValidationError as exc:
        return Refusal(
            job_id=requested_job_id(message.body) or message.fallback_job_id,
            status=Outcome.REJECTED,
            error=exc.detail(),
            source=message.source,
            input=echo_of(message.body),
        )
    return Admit(
        job=request.identified(message.fallback_job_id),
        source=message.source,
        redriven=message.parked_job_id is not None,
    )


def _s3_event(body: str) -> FileFanOut | None:
    """An S3 notification (or its test event), decoded with Powertools' S3 event classes."""
    try:
        decoded: Any = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(decoded, dict):
        return None
    if decoded.get("Event") == "s3:TestEvent":
        return FileFanOut(())  # sent once when the notification is configured: nothing to read
    records = decoded.get("Records")
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records
    ):
        return None
    uploads = []
    for record in S3Event(decoded).records:
        obj = record.s3.get_object
        marker = obj.get("sequencer") or obj.version_id or obj.etag
        uploads.append(
            PromptUpload(
                bucket=record.s3.bucket.name,
                key=unquote_plus(obj.key),
                marker=str(marker or ""),
                size=int(obj.get("size") or 0),
            )
        )
    return FileFanOut(tuple(uploads))


@dataclass(frozen=True)
class FilePlan:
    """What to do with one read prompt file: the job messages to queue, the lines to refuse."""

    messages: list[tuple[str, dict[str, str]]]
    refusals: list[Refusal]


def plan_file(upload: PromptUpload, entries: list[FileEntry]) -> FilePlan:
    """One queued message per valid job, one rejection per invalid one, each naming its line."""
    plan = FilePlan([], [])
    where = position_name(upload.key)
    for entry in entries:
        source = {**upload.source, where: entry.position}
        derived = file_job_id(upload.bucket, upload.key, upload.marker, entry.position)
        if entry.error is not None:
            error = ValidationError(entry.error.field, entry.error.rule, where=entry.label)
            refusal = Refusal(
                job_id=entry.requested_job_id or derived,
                status=Outcome.REJECTED,
                error=error.detail(),
                source=source,
                input={},
            )
            plan.refusals.append(refusal)
            continue
        assert entry.job is not None
        job = entry.job.identified(derived)
        plan.messages.append((json.dumps(job.to_message()), {SOURCE_ATTRIBUTE: json.dumps(source)}))
    return plan


def file_refusal(upload: PromptUpload, error: ErrorDetail) -> Refusal:
    """The whole file is unusable: one rejection for it, under a job id of its own."""
    return Refusal(
        job_id=file_job_id(upload.bucket, upload.key, upload.marker, 0),
        status=Outcome.REJECTED,
        error=error,
        source=upload.source,
        input={},
    )
