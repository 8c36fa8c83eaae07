"""The ports the submit rules talk through: small Protocols, so tests can hand in fakes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..errors import ErrorDetail
from ..job.notification import Notification
from ..job.record import JobRecord, Stage
from ..job.workflow import WorkflowState
from ..types import Json

if TYPE_CHECKING:
    from .intake import PromptUpload


class Ledger(Protocol):
    """The jobs table's conditional transitions (`job.ledger.JobLedger`)."""

    def get(self, job_id: str) -> JobRecord | None: ...

    def claim_submission(
        self, job_id: str, *, lease_s: int, job: Json, source: Json, fingerprint: str = ""
    ) -> JobRecord | None: ...

    def claim_rejection(self, job_id: str, fingerprint: str) -> JobRecord | None: ...

    def note_fingerprint(self, job_id: str, fingerprint: str) -> None: ...

    def release(self, job_id: str) -> None: ...

    def record_prediction(self, job_id: str, prediction_id: str, state: WorkflowState) -> None: ...

    def mark_started(self, job_id: str, execution_arn: str) -> bool: ...

    def claim_terminal(
        self, job_id: str, status: str, error: ErrorDetail | None = None, *, lease_s: int = ...
    ) -> bool: ...

    def claim_park(self, job_id: str) -> bool: ...

    def release_park(self, job_id: str) -> None: ...

    def mark_redrivable(self, job_id: str, *, resume: Stage | None) -> None: ...

    def reopen(self, job_id: str) -> bool: ...

    def reserve_budget(self, day: str, amount_usd: float, cap_usd: float) -> bool: ...

    def refund_budget(self, day: str, amount_usd: float) -> None: ...


class Notifier(Protocol):
    """Publishes a job's one terminal notification; False when it was already sent."""

    def publish_outcome(self, notification: Notification) -> bool: ...


class Queue(Protocol):
    """The job queue and its dead-letter queue."""

    def park(self, body: str, attributes: dict[str, str]) -> None:
        """Puts a message in the dead-letter queue; TransientError when it could not."""

    def enqueue(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Queues job messages (body, string attributes); TransientError when any failed."""

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        """Hides a received message for `delay_s` before its next delivery (best effort)."""


class GenerationApi(Protocol):
    """The part of WaveSpeed the submit path uses (`wavespeed.WaveSpeedClient`)."""

    def check_credentials(self) -> None: ...

    def submit_generation(self, payload: Json) -> str: ...

    def enhance_prompt(self, text: str, style: str = "default") -> str: ...


class Workflows(Protocol):
    """Starts a job's workflow, named after the job: starting it twice returns the same one."""

    def start(self, job_id: str, state: WorkflowState) -> str:
        """The execution ARN; TransientError when the start could not be made."""


class PromptFiles(Protocol):
    """Reads an uploaded prompt file."""

    def read(self, upload: PromptUpload) -> bytes:
        """The bytes of the version the upload's event names; PromptFileRejected (too big,
        gone, a version that does not exist) or TransientError."""
