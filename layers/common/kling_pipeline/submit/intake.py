"""Intake: one SQS record becomes a Job to admit, a Refusal, or a prompt-file fan-out. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from .. import strict_json
from ..errors import ErrorDetail, ValidationError
from ..job.prompt_file import FileEntry, file_job_id, position_name
from ..job.record import Outcome
from ..job.request import (
    JOB_FIELDS,
    JOB_ID_PATTERN,
    Job,
    echo_of,
    fingerprint_of,
    message_job_id,
    parse_message_body,
    requested_job_id,
)
from ..types import Json
from .refusal import INTERNAL_ATTRIBUTES, PARKED_JOB_ATTRIBUTE, SOURCE_ATTRIBUTE, Refusal
from .signing import AttributeSigner


@dataclass(frozen=True)
class ReceivedMessage:
    """One SQS message as the submit function receives it, internal attributes verified."""

    message_id: str
    body: str
    receipt_handle: str = ""
    receive_count: int = 1
    #: The job id a redriven message was parked under (only when its signature holds).
    parked_job_id: str | None = None
    #: The `kp-source` attribute: the prompt file line this message was fanned out from
    #: (only when its signature holds; an outside sender cannot set it).
    source_attribute: str | None = None

    @classmethod
    def from_record(cls, record: SQSRecord, signer: AttributeSigner) -> ReceivedMessage:
        body = record.body or ""
        raw: dict[str, str] = {}
        for name, value in (record.raw_event.get("messageAttributes") or {}).items():
            text = value.get("stringValue") if isinstance(value, dict) else None
            if isinstance(text, str):
                raw[str(name)] = text
        internal = signer.verified(body, raw, INTERNAL_ATTRIBUTES)
        parked_id = internal.get(PARKED_JOB_ATTRIBUTE)
        try:
            receive_count = int(record.attributes.get("ApproximateReceiveCount") or 1)
        except ValueError:
            receive_count = 1
        return cls(
            message_id=record.message_id,
            body=body,
            receipt_handle=record.receipt_handle or "",
            receive_count=receive_count,
            parked_job_id=parked_id if parked_id and JOB_ID_PATTERN.match(parked_id) else None,
            source_attribute=internal.get(SOURCE_ATTRIBUTE),
        )

    @property
    def source(self) -> Json:
        """Where the job came from: its prompt file line, else this SQS message."""
        if self.source_attribute:
            try:
                source = strict_json.loads(self.source_attribute)
            except ValidationError:
                source = None
            if isinstance(source, dict) and source.get("type") == "s3":
                return source
        return {"type": "sqs", "message_id": self.message_id}

    @property
    def fallback_job_id(self) -> str:
        """The job id of a message that names none: derived from its exact body, so a
        redelivery, a redrive or a re-send of the identical body is the same job."""
        return self.parked_job_id or message_job_id(self.body)


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
    #: The object version the event names (a versioned bucket always names one).
    version_id: str = ""
    sequencer: str = ""
    etag: str = ""
    size: int = 0

    @property
    def marker(self) -> str:
        """Same for duplicate events of one upload, new for a re-upload: part of derived job
        ids. The version when the bucket names one, else the event's sequencer, else eTag."""
        return self.version_id or self.sequencer or self.etag

    @property
    def folder_marker(self) -> bool:
        """The S3 console's "Create folder": an empty object whose key ends in a slash."""
        return self.key.endswith("/") and self.size == 0

    @property
    def source(self) -> Json:
        source: Json = {"type": "s3", "bucket": self.bucket, "key": self.key}
        if self.version_id:
            source["version_id"] = self.version_id
        return source

    def at_version(self, version_id: str) -> PromptUpload:
        """The same upload, once the version its eTag names has been found."""
        return PromptUpload(self.bucket, self.key, version_id, "", self.etag, self.size)


@dataclass(frozen=True)
class FileFanOut:
    """An S3 event: each named prompt file is read and queued as one message per job."""

    uploads: tuple[PromptUpload, ...]


Intake = Admit | Refusal | FileFanOut


def take_in(message: ReceivedMessage) -> Intake:
    """Decides what a received message is; a job that breaks the contract is refused here."""
    event = s3_event(message.body)
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
            fingerprint=fingerprint_of(message.body),
        )
    return Admit(
        job=request.identified(message.fallback_job_id),
        source=message.source,
        redriven=message.parked_job_id is not None,
    )


def s3_event(body: str) -> FileFanOut | None:
    """An S3 notification (or its test event); None for anything else, which is then a job
    message. Only a well-formed event counts: `{"prompt": ..., "Records": []}` is a job
    message with an unknown field, never an event with nothing to do."""
    if not strict_json.looks_like_json(body):
        return None
    try:
        decoded: Any = strict_json.loads(body)
    except ValidationError:
        return None
    if not isinstance(decoded, dict) or set(decoded) & set(JOB_FIELDS):
        return None
    if decoded.get("Event") == "s3:TestEvent" and "Records" not in decoded:
        return FileFanOut(())  # sent once when the notification is configured: nothing to read
    records = decoded.get("Records")
    if set(decoded) != {"Records"} or not isinstance(records, list) or not records:
        return None
    uploads = [_upload(record) for record in records]
    if any(upload is None for upload in uploads):
        return None
    return FileFanOut(tuple(u for u in uploads if u is not None))


def _upload(record: Any) -> PromptUpload | None:
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        return None
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        return None
    name, key = bucket.get("name"), obj.get("key")
    if not isinstance(name, str) or not isinstance(key, str) or not name or not key:
        return None
    size = obj.get("size")

    def text(field: str) -> str:
        value = obj.get(field)
        return value if isinstance(value, str) else ""

    return PromptUpload(
        bucket=name,
        key=unquote_plus(key),
        version_id=text("versionId"),
        sequencer=text("sequencer"),
        etag=text("eTag"),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
    )


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
                fingerprint=fingerprint_of(f"{derived}\n{entry.error.message}"),
            )
            plan.refusals.append(refusal)
            continue
        assert entry.job is not None
        job = entry.job.identified(derived)
        plan.messages.append(
            (strict_json.dumps(job.to_message()), {SOURCE_ATTRIBUTE: strict_json.dumps(source)})
        )
    return plan


def file_refusal(
    upload: PromptUpload, error: ErrorDetail, *, status: Outcome = Outcome.REJECTED
) -> Refusal:
    """The whole file is unusable: one outcome for it, under a job id of its own."""
    job_id = file_job_id(upload.bucket, upload.key, upload.marker, 0)
    return Refusal(
        job_id=job_id,
        status=status,
        error=error,
        source=upload.source,
        input={},
        fingerprint=fingerprint_of(f"{job_id}\n{error.code}"),
    )
