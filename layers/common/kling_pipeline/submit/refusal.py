"""Refusal: a job the submit path will not run gets one notification and is parked with why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ErrorDetail, TransientError
from ..job.notification import Notification, job_cost
from ..job.record import Outcome, Stage
from ..types import Json

if TYPE_CHECKING:
    from .intake import ReceivedMessage
    from .ports import Ledger, Notifier, Queue

#: Message attribute carrying the prompt-file source of a fanned-out job message.
SOURCE_ATTRIBUTE = "kp-source"
#: Set on every parked message: a redrive of it is the same job, never a new paid one.
PARKED_JOB_ATTRIBUTE = "job_id"


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

    def __init__(self, *, ledger: Ledger, notifier: Notifier, queue: Queue) -> None:
        self._ledger = ledger
        self._notifier = notifier
        self._queue = queue

    def refuse(self, refusal: Refusal, message: ReceivedMessage | None) -> None:
        """`message` is what gets parked in the dead-letter queue; None parks nothing (a
        prompt-file line has no message of its own)."""
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

    @staticmethod
    def _park_attributes(refusal: Refusal, message: ReceivedMessage) -> dict[str, str]:
        error = refusal.error
        attributes = {
            "reason": error.message[:1000] or error.code,
            "error_code": error.code,
            PARKED_JOB_ATTRIBUTE: refusal.job_id,
        }
        if message.source_attribute:
            attributes[SOURCE_ATTRIBUTE] = message.source_attribute
        return attributes
