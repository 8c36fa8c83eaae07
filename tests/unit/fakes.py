"""In-memory fakes of the submit ports: the business rules run against these in milliseconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from kling_pipeline.errors import ErrorDetail, TransientError
from kling_pipeline.job.notification import Notification
from kling_pipeline.job.record import REDRIVE_FROM_SCRATCH, JobRecord, Outcome, Stage
from kling_pipeline.job.workflow import WorkflowState
from kling_pipeline.submit.intake import PromptUpload
from kling_pipeline.submit.signing import AttributeSigner
from kling_pipeline.types import Json


class FakeLedger:
    """The jobs table as a dict of JobRecords, with the same conditional transitions."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}
        self.spent: dict[str, float] = {}

    def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    def claim_submission(
        self, job_id: str, *, lease_s: int, job: Json, source: Json, fingerprint: str = ""
    ) -> JobRecord | None:
        existing = self.records.get(job_id)
        if existing is not None and not existing.reusable:
            return existing
        self.records[job_id] = JobRecord(
            job_id=job_id,
            stage=Stage.SUBMITTING,
            lease_until=time.time() + lease_s,
            job_input=job,
            source=source,
            created_at="2026-01-01T00:00:00+00:00",
            fingerprint=fingerprint or None,
        )
        return None

    def claim_rejection(self, job_id: str, fingerprint: str) -> JobRecord | None:
        existing = self.records.get(job_id)
        if existing is not None and not (existing.reusable and existing.fingerprint != fingerprint):
            return existing
        self.records[job_id] = JobRecord(job_id=job_id, fingerprint=fingerprint)
        return None

    def note_fingerprint(self, job_id: str, fingerprint: str) -> None:
        record = self.records.get(job_id) or JobRecord(job_id=job_id)
        if record.fingerprint is None:
            self.records[job_id] = replace(record, fingerprint=fingerprint)

    def release(self, job_id: str) -> None:
        record = self.records.get(job_id)
        if record is not None and record.stage is Stage.SUBMITTING:
            del self.records[job_id]

    def record_prediction(self, job_id: str, prediction_id: str, state: WorkflowState) -> None:
        self.records[job_id] = replace(
            self.records[job_id],
            stage=Stage.SUBMITTED,
            prediction_id=prediction_id,
            execution_input=state.to_dict(),
        )

    def mark_started(self, job_id: str, execution_arn: str) -> bool:
        record = self.records[job_id]
        if record.stage is not Stage.SUBMITTED:
            return False
        self.records[job_id] = replace(record, stage=Stage.RUNNING, execution_arn=execution_arn)
        return True

    def claim_terminal(
        self, job_id: str, status: str, error: ErrorDetail | None = None, *, lease_s: int = 120
    ) -> bool:
        record = self.records.get(job_id) or JobRecord(job_id=job_id)
        if record.terminal_status is not None:
            return False
        self.records[job_id] = replace(
            record, terminal_status=Outcome(status), terminal_error=error
        )
        return True

    def mark_notified(self, job_id: str) -> None:
        self.records[job_id] = replace(self.records[job_id], notified_at="now")

    def claim_park(self, job_id: str) -> bool:
        record = self.records.get(job_id) or JobRecord(job_id=job_id)
        if record.parked_at is not None:
            return False
        self.records[job_id] = replace(record, parked_at="now")
        return True

    def release_park(self, job_id: str) -> None:
        self.records[job_id] = replace(self.records[job_id], parked_at=None)

    def mark_redrivable(self, job_id: str, *, resume: Stage | None) -> None:
        redrivable = resume.value if resume is not None else REDRIVE_FROM_SCRATCH
        self.records[job_id] = replace(self.records[job_id], redrivable=redrivable)

    def reopen(self, job_id: str) -> bool:
        record = self.records.get(job_id)
        if record is None or record.redrivable is None:
            return False
        if record.redrivable == REDRIVE_FROM_SCRATCH:
            del self.records[job_id]
        else:
            self.records[job_id] = replace(
                record,
                stage=Stage(record.redrivable),
                terminal_status=None,
                terminal_error=None,
                notified_at=None,
                parked_at=None,
                redrivable=None,
            )
        return True

    def reserve_budget(self, day: str, amount_usd: float, cap_usd: float) -> bool:
        if self.spent.get(day, 0.0) + amount_usd > cap_usd + 1e-9:
            return False
        self.spent[day] = self.spent.get(day, 0.0) + amount_usd
        return True

    def refund_budget(self, day: str, amount_usd: float) -> None:
        self.spent[day] = self.spent.get(day, 0.0) - amount_usd


def fake_signer(key: str = "test-api-key-0123456789") -> AttributeSigner:
    """A signer keyed like the pipeline's, from a fixed stand-in API key."""
    return AttributeSigner(lambda: key)


class FakeNotifier:
    """Publishes through the ledger's terminal claim, as the SNS notifier does."""

    def __init__(self, ledger: FakeLedger) -> None:
        self.ledger = ledger
        self.published: list[Json] = []

    def publish_outcome(self, notification: Notification) -> bool:
        if not self.ledger.claim_terminal(
            notification.job_id, notification.status, notification.error
        ):
            return False
        self.published.append(notification.to_json())
        self.ledger.mark_notified(notification.job_id)
        return True


@dataclass
class FakeQueue:
    """The job queue and DLQ: what was parked, queued and delayed."""

    parked: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    queued: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delays: list[tuple[str, int]] = field(default_factory=list)
    park_fails: bool = False

    def park(self, body: str, attributes: dict[str, str]) -> None:
        if self.park_fails:
            raise TransientError("the dead-letter queue is unavailable", code="park_failed")
        self.parked.append((body, attributes))

    def enqueue(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        self.queued.extend(messages)

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        self.delays.append((receipt_handle, delay_s))


@dataclass
class FakeApi:
    """WaveSpeed: counts paid POSTs; `fail_with` makes the next POSTs raise."""

    posts: list[Json] = field(default_factory=list)
    fail_with: Exception | None = None
    key_error: Exception | None = None
    enhance_error: Exception | None = None
    #: What the optimizer answers instead of the usual enhancement (any shape: a hostile API).
    enhance_answer: object = None

    def check_credentials(self) -> None:
        if self.key_error is not None:
            raise self.key_error

    def submit_generation(self, payload: Json) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.posts.append(payload)
        return f"pred-{len(self.posts)}"

    def enhance_prompt(self, text: str, style: str = "default") -> str:
        if self.enhance_error is not None:
            raise self.enhance_error
        if self.enhance_answer is not None:
            return self.enhance_answer  # type: ignore[return-value]
        return f"{text}, cinematic lighting"


@dataclass
class FakeWorkflows:
    """Step Functions: one execution per job id; `fail_next` makes the next start fail."""

    started: dict[str, WorkflowState] = field(default_factory=dict)
    fail_next: bool = False

    def start(self, job_id: str, state: WorkflowState) -> str:
        if self.fail_next:
            self.fail_next = False
            raise TransientError("could not start the workflow")
        self.started.setdefault(job_id, state)
        return f"arn:aws:states:us-east-1:1:execution:jobs:{job_id}"


@dataclass
class FakePromptFiles:
    """The prompts bucket: key -> bytes."""

    files: dict[str, bytes] = field(default_factory=dict)

    def read(self, upload: PromptUpload) -> bytes:
        return self.files[upload.key]
