"""Refusal: a job the submit path will not run gets one notification and is parked with why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ErrorDetail, TransientError
from ..job.notification import Notification, job_cost
from ..job.record import Outcome, Stage
from ..observability import logger, metrics
from ..redact import redact
from ..types import Json
from .signing import AttributeSigner

if TYPE_CHECKING:
    from .intake import ReceivedMessage
    from .ports import Ledger, Notifier, Queue

#: Message attribute carrying the prompt-file source of a fanned-out job message.
SOURCE_ATTRIBUTE = "kp-source"
#: Set on every parked message: a redrive of it is the same job, never a new paid one.
PARKED_JOB_ATTRIBUTE = "job_id"
#: The attributes only the pipeline may set: each travels with a signature (`signing`).
INTERNAL_ATTRIBUTES = (SOURCE_ATTRIBUTE, PARKED_JOB_ATTRIBUTE)
#: The DLQ `reason` is read by people and alarms, not parsed: a bounded, redacted sentence.
MAX_REASON_CHARS = 1000
JOB_ID_CONFLICT = "job_id_conflict"


@dataclass(frozen=True)
class Redrive:
    """A refusal a DLQ redrive may retry: from scratch, or (`resume`) from a paid task."""

    resume: Stage | None = None


@dataclass(frozen=True)
class Refusal:
    """Why one job will not run, and what its notification says."""

    job_id: str
    status: Outcome
    error: ErrorDetail
    source: Json
    #: What the job asked for, as far as it could be read.
    input: Json
    metadata: Json = field(default_factory=dict)
    #: The WaveSpeed task of a job that paid before it was refused.
    request_id: str | None = None
    #: The duration that was paid for, when a task was created: the notification's cost.
    paid_duration: int | None = None
    redrive: Redrive | None = None
    #: Digest of what was refused: the same refusal again is a duplicate delivery, a
    #: different one under the same job id is a conflict.
    fingerprint: str | None = None

    def notification(self) -> Notification:
        return Notification(
            job_id=self.job_id,
            status=self.status.value,
            input=self.input,
            source=self.source,
            request_id=self.request_id,
            error=self.error,
            metadata=self.metadata,
            cost=job_cost(self.paid_duration, paid=self.paid_duration is not None),
        )


class Refuser:
    """Sends a refusal's one terminal notification, parks its message, marks it redrivable."""

    def __init__(
        self, *, ledger: Ledger, notifier: Notifier, queue: Queue, signer: AttributeSigner
    ) -> None:
        self._ledger = ledger
        self._notifier = notifier
        self._queue = queue
        self._signer = signer

    def refuse(self, refusal: Refusal, message: ReceivedMessage | None) -> None:
        """`message` is what gets parked in the dead-letter queue; None parks nothing (a
        prompt-file line has no message of its own).

        A rejection never displaces the job that owns its id: when that id belongs to a
        claimed (possibly paid) job or to a different refused request, the message is parked
        as a conflict and that job's record and notification are left alone.
        """
        if refusal.status is Outcome.REJECTED and refusal.fingerprint is not None:
            owner = self._ledger.claim_rejection(refusal.job_id, refusal.fingerprint)
            if owner is not None and (
                owner.stage is not None or owner.fingerprint != refusal.fingerprint
            ):
                self.park_conflict(refusal.job_id, refusal.error, message)
                return
        elif refusal.fingerprint is not None:
            self._ledger.note_fingerprint(refusal.job_id, refusal.fingerprint)
        self._notifier.publish_outcome(refusal.notification())
        # Only one delivery parks: a duplicate whose twin parked the job parks nothing.
        if message is not None and self._ledger.claim_park(refusal.job_id):
            try:
                self._queue.park(message.body or " ", self._park_attributes(refusal, message))
            except TransientError:
                self._ledger.release_park(refusal.job_id)
                raise TransientError(
                    "could not park the message in the dead-letter queue", code="park_failed"
                ) from None
        if refusal.redrive is not None:
            self._ledger.mark_redrivable(refusal.job_id, resume=refusal.redrive.resume)

    def park_conflict(
        self, job_id: str, error: ErrorDetail, message: ReceivedMessage | None
    ) -> None:
        """Parks a message whose job id belongs to another request; touches no job record."""
        metrics.add_metric(name="JobIdConflicts", unit="Count", value=1)
        reason = (
            f"job_id {job_id!r} already belongs to a different request; this message was not "
            f"run and that job was left unchanged (this message: {error.message})"
        )
        logger.warning("job id conflict parked", extra={"job_id": job_id})
        if message is None:
            return  # a prompt-file line: its file is in S3, the conflict is in the log
        attributes = {"reason": _reason(reason), "error_code": JOB_ID_CONFLICT}
        attributes.update(self._internal(message, {}))
        self._queue.park(message.body or " ", attributes)

    def _park_attributes(self, refusal: Refusal, message: ReceivedMessage) -> dict[str, str]:
        error = refusal.error
        attributes = {"reason": _reason(error.message or error.code), "error_code": error.code}
        attributes.update(self._internal(message, {PARKED_JOB_ATTRIBUTE: refusal.job_id}))
        return attributes

    def _internal(self, message: ReceivedMessage, internal: dict[str, str]) -> dict[str, str]:
        """The internal attributes to park with, signed over the parked body."""
        if message.source_attribute:
            internal = {**internal, SOURCE_ATTRIBUTE: message.source_attribute}
        return self._signer.sign(message.body or " ", internal)


def _reason(text: str) -> str:
    return redact(text)[:MAX_REASON_CHARS]
