"""WorkflowState: the Step Functions payload, built and read only through this module.

The state machine moves it between Tasks as JSON (`to_dict` / `from_dict`); the keys below are
also the JSONPaths `statemachine/job.asl.json` names ($.poll.wait_seconds, $.poll.status,
$.delivery.status, $.error).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..errors import ErrorDetail
from ..settings import PollSchedule
from ..types import Json

WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
STORED = "stored"
#: The poll defaults live once, in PollSchedule; a schedule missing a key falls back to them.
_DEFAULTS = PollSchedule()


@dataclass(frozen=True)
class Schedule:
    """The poll schedule as data: how long to wait between checks, and until when.

    Two deadlines: a task waiting in WaveSpeed's queue (`created`, over the account's
    concurrency) may wait until `queued_until`; once it is seen `processing`, its generation
    has `generation_s` from that moment. `deadline_at` bounds both; a state written before the
    two existed (`generation_s` 0) keeps it as its only deadline.
    """

    first_wait_s: int = _DEFAULTS.first_wait_s
    interval_s: int = _DEFAULTS.interval_s
    backoff: float = _DEFAULTS.backoff
    max_interval_s: int = _DEFAULTS.max_interval_s
    min_interval_s: int = _DEFAULTS.min_interval_s
    deadline_at: float = 0.0
    generation_s: int = 0
    queued_until: float = 0.0
    queued_interval_s: int = _DEFAULTS.queued_interval_s
    #: Seconds "Wait for webhook" waits before reading the status anyway; 0: poll instead.
    webhook_wait_s: int = 0

    @classmethod
    def starting(cls, plan: PollSchedule, now: float) -> Schedule:
        return cls(
            first_wait_s=plan.first_wait_s,
            interval_s=plan.interval_s,
            backoff=plan.backoff,
            max_interval_s=plan.max_interval_s,
            min_interval_s=plan.min_interval_s,
            deadline_at=now + plan.queued_deadline_s + plan.deadline_s,
            generation_s=plan.deadline_s,
            queued_until=now + plan.queued_deadline_s,
            queued_interval_s=plan.queued_interval_s,
            webhook_wait_s=plan.webhook_wait_s,
        )

    def deadline(self, processing_since: float | None) -> float:
        """When the job gives up: queued time and generation time are bounded separately."""
        if self.generation_s <= 0:
            return self.deadline_at
        if processing_since is None:
            return self.queued_until
        return processing_since + self.generation_s

    def next_wait(self, polls: int) -> int:
        """The wait before poll number `polls + 1`: interval grown by backoff, capped, floored."""
        interval = float(self.interval_s) * float(self.backoff) ** max(0, polls - 1)
        capped = min(interval, float(self.max_interval_s))
        return max(int(self.min_interval_s), int(round(capped)))

    def to_dict(self) -> Json:
        return {
            "first_wait_s": self.first_wait_s,
            "interval_s": self.interval_s,
            "backoff": self.backoff,
            "max_interval_s": self.max_interval_s,
            "min_interval_s": self.min_interval_s,
            "deadline_at": self.deadline_at,
            "generation_s": self.generation_s,
            "queued_until": self.queued_until,
            "queued_interval_s": self.queued_interval_s,
            "webhook_wait_s": self.webhook_wait_s,
        }

    @classmethod
    def from_dict(cls, data: Json) -> Schedule:
        return cls(
            first_wait_s=int(data.get("first_wait_s", _DEFAULTS.first_wait_s)),
            interval_s=int(data.get("interval_s", _DEFAULTS.interval_s)),
            backoff=float(data.get("backoff", _DEFAULTS.backoff)),
            max_interval_s=int(data.get("max_interval_s", _DEFAULTS.max_interval_s)),
            min_interval_s=int(data.get("min_interval_s", _DEFAULTS.min_interval_s)),
            deadline_at=float(data.get("deadline_at", 0.0)),
            generation_s=int(data.get("generation_s", 0)),
            queued_until=float(data.get("queued_until", 0.0)),
            queued_interval_s=int(data.get("queued_interval_s", _DEFAULTS.queued_interval_s)),
            webhook_wait_s=int(data.get("webhook_wait_s", 0)),
        )


@dataclass(frozen=True)
class Poll:
    """The last status check: `waiting` (with `wait_seconds`), `completed` or `failed`."""

    status: str = WAITING
    polls: int = 0
    wait_seconds: int | None = None
    last_status: str | None = None
    checked_at: float | None = None
    outputs: tuple[str, ...] = ()
    has_nsfw_contents: tuple[bool, ...] = ()
    execution_time_ms: float | None = None
    error: ErrorDetail | None = None
    #: When a status read first said `processing`: the generation deadline counts from here.
    processing_since: float | None = None
    #: Status reads in a row that could not be made (an outage): the job keeps waiting.
    read_failures: int = 0
    #: WaveSpeed's creation time of the task (ISO 8601): its outputs live 7 days from then.
    created_at: str | None = None
    #: WaveSpeed refunds a generation that failed or timed out: nothing was charged.
    refunded: bool = False

    def to_dict(self) -> Json:
        body: Json = {"status": self.status, "polls": self.polls}
        optional: Json = {
            "wait_seconds": self.wait_seconds,
            "last_status": self.last_status,
            "checked_at": self.checked_at,
            "execution_time_ms": self.execution_time_ms,
            "processing_since": self.processing_since,
            "read_failures": self.read_failures or None,
            "created_at": self.created_at,
            "refunded": self.refunded or None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if self.status == COMPLETED:
            body["outputs"] = list(self.outputs)
            body["has_nsfw_contents"] = list(self.has_nsfw_contents)
        if self.error is not None:
            body["error"] = self.error.to_json()
        return body

    @classmethod
    def from_dict(cls, data: Json) -> Poll:
        wait = data.get("wait_seconds")
        checked = data.get("checked_at")
        run_ms = data.get("execution_time_ms")
        since = data.get("processing_since")
        return cls(
            status=str(data.get("status") or WAITING),
            polls=int(data.get("polls") or 0),
            wait_seconds=int(wait) if wait is not None else None,
            last_status=data.get("last_status"),
            checked_at=float(checked) if checked is not None else None,
            outputs=tuple(str(url) for url in data.get("outputs") or ()),
            has_nsfw_contents=tuple(bool(f) for f in data.get("has_nsfw_contents") or ()),
            execution_time_ms=float(run_ms) if run_ms is not None else None,
            error=ErrorDetail.from_json(data.get("error")),
            processing_since=float(since) if since is not None else None,
            read_failures=int(data.get("read_failures") or 0),
            created_at=data.get("created_at"),
            refunded=bool(data.get("refunded")),
        )


@dataclass(frozen=True)
class Delivery:
    """What "Store video and notify" did: `stored`, or `failed` with why (a permanent error)."""

    status: str
    outputs: tuple[str, ...] = ()
    bytes: int = 0
    error: ErrorDetail | None = None

    def to_dict(self) -> Json:
        body: Json = {"status": self.status, "outputs": list(self.outputs), "bytes": self.bytes}
        if self.error is not None:
            body["error"] = self.error.to_json()
        return body

    @classmethod
    def from_dict(cls, data: Any) -> Delivery | None:
        if not isinstance(data, dict):
            return None
        return cls(
            status=str(data.get("status") or STORED),
            outputs=tuple(str(uri) for uri in data.get("outputs") or ()),
            bytes=int(data.get("bytes") or 0),
            error=ErrorDetail.from_json(data.get("error")),
        )


@dataclass(frozen=True)
class JobSummary:
    """The job as the workflow carries it: enough to store, describe and notify it."""

    job_id: str
    input: Json
    source: Json
    metadata: Json = field(default_factory=dict)
    prompt_enhancement: Json | None = None
    submitted_at: str | None = None
    #: This run only re-stores the outputs of a job that failed to store them (the re-store
    #: command): it reads the result once and never waits for a generation.
    restore: bool = False

    @property
    def duration(self) -> int:
        return int(self.input.get("duration", 5))

    def to_dict(self) -> Json:
        body: Json = {
            "job_id": self.job_id,
            "input": self.input,
            "source": self.source,
            "metadata": self.metadata,
            "prompt_enhancement": self.prompt_enhancement,
            "submitted_at": self.submitted_at,
        }
        if self.restore:
            body["restore"] = True
        return body

    @classmethod
    def from_dict(cls, data: Json) -> JobSummary:
        enhancement = data.get("prompt_enhancement")
        return cls(
            job_id=str(data["job_id"]),
            input=dict(data.get("input") or {}),
            source=dict(data.get("source") or {}),
            metadata=dict(data.get("metadata") or {}),
            prompt_enhancement=enhancement if isinstance(enhancement, dict) else None,
            submitted_at=data.get("submitted_at"),
            restore=data.get("restore") is True,
        )


@dataclass(frozen=True)
class WorkflowState:
    """One job's Step Functions execution state, from its start to its terminal notification."""

    job: JobSummary
    prediction_id: str
    submitted_at: float
    schedule: Schedule
    poll: Poll
    delivery: Delivery | None = None
    #: What a `Catch` recorded when a Task crashed or timed out: {"Error", "Cause"}.
    caught: Json | None = None

    @classmethod
    def start(
        cls, job: JobSummary, prediction_id: str, plan: PollSchedule, now: float
    ) -> WorkflowState:
        """The execution input: the first check waits the schedule's first wait."""
        return cls(
            job=replace(job, submitted_at=datetime.fromtimestamp(now, UTC).isoformat()),
            prediction_id=prediction_id,
            submitted_at=now,
            schedule=Schedule.starting(plan, now),
            poll=Poll(status=WAITING, polls=0, wait_seconds=plan.first_wait_s),
        )

    def with_poll(self, poll: Poll) -> WorkflowState:
        return replace(self, poll=poll)

    def failure(self) -> ErrorDetail:
        """Why the job failed: a crash the workflow caught, the store step, or the last poll."""
        if self.caught and self.caught.get("Error"):
            return ErrorDetail.from_caught(self.caught)
        if self.delivery is not None and self.delivery.error is not None:
            return self.delivery.error
        return self.poll.error or ErrorDetail("unknown", "the job failed")

    def to_dict(self) -> Json:
        return {
            "job": self.job.to_dict(),
            "prediction": {"id": self.prediction_id, "submitted_at": self.submitted_at},
            "schedule": self.schedule.to_dict(),
            "poll": self.poll.to_dict(),
            # Present from the start: the failure step's Parameters name both paths.
            "delivery": self.delivery.to_dict() if self.delivery is not None else None,
            "error": self.caught,
        }

    @classmethod
    def from_dict(cls, data: Json) -> WorkflowState:
        prediction: Json = data.get("prediction") or {}
        caught = data.get("error")
        return cls(
            job=JobSummary.from_dict(data["job"]),
            prediction_id=str(prediction.get("id") or ""),
            submitted_at=float(prediction.get("submitted_at") or 0.0),
            schedule=Schedule.from_dict(data.get("schedule") or {}),
            poll=Poll.from_dict(data.get("poll") or {}),
            delivery=Delivery.from_dict(data.get("delivery")),
            caught=caught if isinstance(caught, dict) else None,
        )
