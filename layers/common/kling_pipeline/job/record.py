"""JobRecord: the one codec of the jobs-table item (`pk = job#<id>`), for every reader.

Functions, the command line and the local runner read a job only through `JobRecord.from_item`;
the ledger writes one only through the attribute names defined here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from ..errors import ErrorDetail
from ..types import Json
from .workflow import WorkflowState

#: A job whose message is still on the queue has no record yet; the command line says "queued".
QUEUED = "queued"
#: `redrivable` value of a refused job that never paid: a redrive starts it from scratch.
REDRIVE_FROM_SCRATCH = "new"
E = TypeVar("E", bound=StrEnum)


class Stage(StrEnum):
    """How far the paid submission got (stored as `state`)."""

    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"


class Outcome(StrEnum):
    """The terminal status of a job: what its one notification says."""

    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"


TERMINAL = tuple(outcome.value for outcome in Outcome)
#: Every status a user can see, in lifecycle order.
STATUSES = (*(stage.value for stage in Stage), *TERMINAL)


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"job#{job_id}"}}


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if isinstance(value, dict) and "S" in value else None


def _number(item: dict[str, Any], name: str) -> float:
    value = item.get(name)
    return float(value["N"]) if isinstance(value, dict) and "N" in value else 0.0


def _object(item: dict[str, Any], name: str) -> Json:
    text = _text(item, name)
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _enum(kind: type[E], value: str | None) -> E | None:
    try:
        return kind(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class JobRecord:
    """What the pipeline knows about one job."""

    job_id: str
    #: How far the paid submission got; None for a job refused before it was claimed.
    stage: Stage | None = None
    prediction_id: str | None = None
    execution_arn: str | None = None
    created_at: str | None = None
    submitted_at: str | None = None
    #: The job message as it was claimed, and where it came from.
    job_input: Json = field(default_factory=dict)
    source: Json = field(default_factory=dict)
    #: The workflow's execution input, kept so a crash before the start can resume it.
    execution_input: Json = field(default_factory=dict)
    lease_until: float = 0.0
    #: The terminal status claimed for the notification (published once `notified_at` is set).
    terminal_status: Outcome | None = None
    terminal_error: ErrorDetail | None = None
    terminal_lease_until: float = 0.0
    notified_at: str | None = None
    parked_at: str | None = None
    #: Set on a refusal a DLQ redrive may retry: the stage to resume, or REDRIVE_FROM_SCRATCH.
    redrivable: str | None = None
    #: Digest of the request (or refused body) that owns this job id: another one is a conflict.
    fingerprint: str | None = None

    @property
    def notified(self) -> bool:
        return self.notified_at is not None

    @property
    def lease_expired(self) -> bool:
        return time.time() > self.lease_until

    @property
    def paid(self) -> bool:
        """A WaveSpeed task exists (or existed) for this job."""
        return self.prediction_id is not None

    @property
    def status(self) -> str:
        """What a user should see: the outcome once notified, else how far the job got.

        A job refused before submission has no stage: its claimed outcome is all there is.
        """
        if self.terminal_status is not None and (self.notified or self.stage is None):
            return self.terminal_status.value
        return self.stage.value if self.stage is not None else ""

    @property
    def reusable(self) -> bool:
        """Only a `rejected` outcome, never claimed for payment: the id may be sent again."""
        return self.stage is None and self.terminal_status is Outcome.REJECTED and self.notified

    @property
    def workflow(self) -> WorkflowState | None:
        """The workflow state the paid submission started (or must start) with."""
        return WorkflowState.from_dict(self.execution_input) if self.execution_input else None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def first_seen(self) -> str:
        """When the job appeared; rejected jobs only have their notification time."""
        return self.created_at or self.notified_at or ""

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> JobRecord:
        pk = _text(item, "pk") or ""
        terminal_error = _object(item, "terminal_error")
        return cls(
            job_id=_text(item, "job_id") or pk.removeprefix("job#"),
            # Items written before stage and outcome were kept apart hold the outcome in
            # `state`; their `terminal_status` says the same, so only a stage is read here.
            stage=_enum(Stage, _text(item, "state")),
            prediction_id=_text(item, "prediction_id"),
            execution_arn=_text(item, "execution_arn"),
            created_at=_text(item, "created_at"),
            submitted_at=_text(item, "submitted_at"),
            job_input=_object(item, "job"),
            source=_object(item, "source"),
            execution_input=_object(item, "execution_input"),
            lease_until=_number(item, "lease_until"),
            terminal_status=_enum(Outcome, _text(item, "terminal_status")),
            terminal_error=ErrorDetail.from_json(terminal_error),
            terminal_lease_until=_number(item, "terminal_lease_until"),
            notified_at=_text(item, "notified_at"),
            parked_at=_text(item, "parked_at"),
            redrivable=_text(item, "redrivable"),
            fingerprint=_text(item, "fingerprint"),
        )

    def to_item(self) -> dict[str, Any]:
        """The item as stored; attributes without a value are left out."""
        item: dict[str, Any] = {**job_key(self.job_id), "job_id": {"S": self.job_id}}
        texts = {
            "state": self.stage.value if self.stage is not None else None,
            "prediction_id": self.prediction_id,
            "execution_arn": self.execution_arn,
            "created_at": self.created_at,
            "submitted_at": self.submitted_at,
            "terminal_status": self.terminal_status.value if self.terminal_status else None,
            "notified_at": self.notified_at,
            "parked_at": self.parked_at,
            "redrivable": self.redrivable,
            "fingerprint": self.fingerprint,
        }
        item.update({name: {"S": value} for name, value in texts.items() if value is not None})
        objects = {
            "job": self.job_input,
            "source": self.source,
            "execution_input": self.execution_input,
            "terminal_error": self.terminal_error.to_json() if self.terminal_error else None,
        }
        item.update({name: {"S": encode(value)} for name, value in objects.items() if value})
        numbers = {
            "lease_until": self.lease_until,
            "terminal_lease_until": self.terminal_lease_until,
        }
        item.update({name: {"N": str(int(v))} for name, v in numbers.items() if v})
        return item


def encode(value: Json) -> str:
    """How the record stores a JSON object: sorted keys, so equal objects compare equal."""
    return json.dumps(value, sort_keys=True)
