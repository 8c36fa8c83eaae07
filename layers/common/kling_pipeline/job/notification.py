"""The terminal notification every job gets once, and the one builder of its cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import MODEL_ID, NOTIFICATION_SCHEMA
from ..errors import ErrorDetail
from ..types import Json
from .request import price_usd
from .workflow import WorkflowState

# Rough AWS list prices (us-east-1) for the cost estimate in notifications.
SFN_TRANSITION_USD = 0.000025
LAMBDA_INVOKE_USD = 0.0000002 + 0.0000166667 * 0.5  # request + ~0.5 GB-s
S3_GB_MONTH_USD = 0.023


def estimate_aws_usd(polls: int, stored_bytes: int) -> float:
    """Transitions and invocations of this workflow plus one month of storage."""
    transitions = 6 + 3 * polls
    invocations = 3 + polls
    storage = stored_bytes / 1024**3 * S3_GB_MONTH_USD
    return round(transitions * SFN_TRANSITION_USD + invocations * LAMBDA_INVOKE_USD + storage, 6)


def job_cost(
    duration: int | None, *, paid: bool, polls: int | None = None, stored_bytes: int = 0
) -> Json:
    """What a job costs: WaveSpeed's price when a task was paid for, plus the AWS estimate of
    its workflow when one ran (`polls` given). Refused jobs cost nothing."""
    cost: Json = {"wavespeed_usd": price_usd(duration) if paid and duration else 0.0}
    if polls is not None:
        cost["aws_usd_estimate"] = estimate_aws_usd(polls, stored_bytes)
    cost["currency"] = "USD"
    cost["paid"] = paid
    return cost


@dataclass(frozen=True)
class Notification:
    """The SNS message a subscriber receives: schema kling-pipeline.notification/v1."""

    job_id: str
    status: str
    input: Json
    source: Json
    request_id: str | None = None
    outputs: list[Json] = field(default_factory=list)
    error: ErrorDetail | None = None
    metadata: Json = field(default_factory=dict)
    cost: Json = field(default_factory=lambda: job_cost(None, paid=False))
    #: Fields added after v1 (sidecar, prompt_enhancement, ...): added, never renamed.
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        body: Json = {
            "schema": NOTIFICATION_SCHEMA,
            "job_id": self.job_id,
            "status": self.status,
            "request_id": self.request_id,
            "model": MODEL_ID,
            "input": self.input,
            "source": self.source,
            "outputs": self.outputs,
            "error": self.error.to_json() if self.error is not None else None,
            "metadata": self.metadata,
            "cost": self.cost,
        }
        body.update(self.extra)
        return body


def workflow_notification(
    state: WorkflowState,
    status: str,
    *,
    cost: Json,
    outputs: list[Json] | None = None,
    error: ErrorDetail | None = None,
    extra: Json | None = None,
) -> Notification:
    """The notification of a job whose workflow ran: its job, task and prompt enhancement."""
    job = state.job
    fields = dict(extra or {})
    if job.prompt_enhancement:
        fields["prompt_enhancement"] = job.prompt_enhancement
    return Notification(
        job_id=job.job_id,
        status=status,
        input=job.input,
        source=job.source,
        request_id=state.prediction_id or None,
        outputs=outputs or [],
        error=error,
        metadata=job.metadata,
        cost=cost,
        extra=fields,
    )
