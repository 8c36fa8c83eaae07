"""The poll step: read the prediction once (`read_prediction`), then decide the next step.

What WaveSpeed does and how this step answers it:
- a task over the account's concurrency waits `created` (queued) until a slot frees: its
  generation deadline counts from the first read that says `processing`, and the queued time
  is bounded on its own (`Schedule.deadline`);
- a status read that keeps failing (an outage: HTTP 5xx, or envelope code 5000/5003/5004) is
  no verdict on the paid task: the job keeps waiting, with backoff, until its deadline;
- a failed task carries `data.code`, mapped to the job's error code (`TASK_ERRORS`);
- a deadline failure is only ever decided on a status read made at (or after) the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from .errors import ErrorDetail, TransientError
from .job.workflow import COMPLETED, FAILED, WAITING, Poll, WorkflowState
from .wavespeed import IN_PROGRESS, QUEUED, TERMINAL_FAILURES, Prediction

#: Job error codes of WaveSpeed's task error codes (`data.code` of a failed prediction).
TASK_ERRORS = {
    1200: "content_moderated",
    1400: "invalid_parameters",
    1401: "invalid_parameters",
    1402: "media_unreachable",
    1403: "generation_failed",
    1405: "generation_failed",
    5000: "wavespeed_server_error",
    5003: "wavespeed_server_error",
    5004: "wavespeed_server_error",
}
#: WaveSpeed refunds generations that fail or time out; cancelled ones are not refunded.
REFUNDED_STATUSES = {"failed", "timeout"}
#: Longest wait between reads while the API is unreachable.
OUTAGE_MAX_WAIT_S = 300
SEVEN_DAYS = "outputs are kept there for 7 days"


class StatusReader(Protocol):
    """The part of WaveSpeed the poll step uses (`wavespeed.WaveSpeedClient`)."""

    def read_prediction(self, prediction_id: str) -> Prediction: ...


def poll_prediction(
    state: WorkflowState, api: StatusReader, clock: Callable[[], float] = time.time
) -> Poll:
    """One status read of the job's prediction and the decision it leads to.

    Failures the API reports come back as data (`failed` with an error code). A read that
    kept failing (the client retried it) is not a failure of the job: it waits and reads
    again, until its deadline.
    """
    try:
        prediction = api.read_prediction(state.prediction_id)
    except TransientError as exc:
        return unreadable(state, exc, clock())
    return check_prediction(state, prediction, clock())


def check_prediction(state: WorkflowState, prediction: Prediction, now: float) -> Poll:
    """What the workflow does after this reading: wait, store, or fail."""
    previous = state.poll
    polls = previous.polls + 1
    since = previous.processing_since
    if since is None and prediction.status not in QUEUED:
        # The first read past the queue: the generation deadline counts from here.
        since = now
    seen = Poll(
        polls=polls,
        last_status=prediction.status,
        checked_at=now,
        processing_since=since,
        created_at=prediction.created_at or previous.created_at,
    )

    def failed(code: str, message: str, *, refunded: bool = False) -> Poll:
        return replace(seen, status=FAILED, error=ErrorDetail(code, message), refunded=refunded)

    if prediction.status == "completed":
        if not prediction.outputs:
            return failed("no_outputs", "the prediction completed without outputs")
        return replace(
            seen,
            status=COMPLETED,
            outputs=tuple(prediction.outputs),
            has_nsfw_contents=tuple(prediction.has_nsfw_contents),
            execution_time_ms=prediction.execution_time_ms,
        )
    if prediction.status in TERMINAL_FAILURES:
        code, message = task_error(prediction)
        return failed(code, message, refunded=prediction.status in REFUNDED_STATUSES)
    if prediction.status not in IN_PROGRESS:
        return failed(
            "unknown_status", f"WaveSpeed reported an unknown status {prediction.status!r}"
        )
    if state.job.restore:
        return failed(
            "not_restorable",
            f"the prediction {state.prediction_id} is {prediction.status}, not completed: "
            "there is nothing to store yet",
        )
    deadline = state.schedule.deadline(since)
    if now >= deadline:
        waited = "in WaveSpeed's queue" if since is None else prediction.status
        return failed(
            "deadline_passed",
            f"the generation was still {waited} when the deadline passed; the task may still "
            f"finish on WaveSpeed (prediction {state.prediction_id}), {SEVEN_DAYS}",
        )
    # Never sleep past the deadline: the last read lands on it (at most a second late), even
    # if that makes this one wait shorter than the floor.
    wait = state.schedule.next_wait(polls)
    if since is None:
        wait = max(wait, state.schedule.queued_interval_s)
    wait = min(wait, int(deadline - now) + 1)
    return replace(seen, status=WAITING, wait_seconds=wait)


def unreadable(state: WorkflowState, exc: TransientError, now: float) -> Poll:
    """A status read that failed after the client's retries: wait longer, unless the deadline
    has passed (then this failed read was the last one)."""
    previous = state.poll
    failures = previous.read_failures + 1
    seen = replace(
        previous,
        status=WAITING,
        polls=previous.polls + 1,
        checked_at=now,
        read_failures=failures,
        error=None,
    )
    deadline = state.schedule.deadline(previous.processing_since)
    if now >= deadline or state.job.restore:
        return replace(
            seen,
            status=FAILED,
            wait_seconds=None,
            error=ErrorDetail(
                "status_unreadable",
                f"WaveSpeed's status could not be read ({exc.code}: {exc.message}) "
                f"{failures} time(s) in a row up to the deadline; the task may still finish "
                f"(prediction {state.prediction_id}), {SEVEN_DAYS}",
            ),
        )
    schedule = state.schedule
    backoff = min(OUTAGE_MAX_WAIT_S, schedule.interval_s * 2 ** min(failures - 1, 10))
    wait = max(schedule.min_interval_s, min(backoff, int(deadline - now) + 1))
    return replace(seen, wait_seconds=wait)


def task_error(prediction: Prediction) -> tuple[str, str]:
    """The job error of a prediction WaveSpeed ended without a video."""
    detail = prediction.error or f"WaveSpeed reported status {prediction.status}"
    # `timeout` and `cancelled` say more than the code they carry (5004, a generic 14xx).
    code = TASK_ERRORS.get(prediction.code) if prediction.status == "failed" else None
    if code is None:
        return f"generation_{prediction.status}", detail
    if code == "wavespeed_server_error":
        # Final for this task (WaveSpeed refunds it); another try is a new paid task, so it is
        # the user's call with a new job id, never an automatic second POST.
        detail += "; WaveSpeed failed on its side: send the job again with a new job_id"
    return code, f"{detail} (WaveSpeed code {prediction.code})"
