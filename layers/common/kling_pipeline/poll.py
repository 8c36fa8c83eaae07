"""The poll step: read the prediction once (`read_prediction`), then decide the next step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from .errors import ErrorDetail
from .job.workflow import COMPLETED, FAILED, WAITING, Poll, Schedule, WorkflowState
from .wavespeed import IN_PROGRESS, TERMINAL_FAILURES, Prediction, WaveSpeedClient


def poll_prediction(
    state: WorkflowState, api: WaveSpeedClient, clock: Callable[[], float] = time.time
) -> Poll:
    """One status read of the job's prediction and the decision it leads to.

    Failures the API reports come back as data (`failed` with an error code); only a read that
    kept failing raises (TransientError, which the state machine retries).
    """
    return check_prediction(state, api.read_prediction(state.prediction_id), clock())


def check_prediction(state: WorkflowState, prediction: Prediction, now: float) -> Poll:
    """What the workflow does after this reading: wait, store, or fail."""
    return decide(state.schedule, state.poll.polls, state.prediction_id, prediction, now)


def decide(
    schedule: Schedule, polls_before: int, prediction_id: str, prediction: Prediction, now: float
) -> Poll:
    """The decision alone: `completed`, `waiting` (with the wait) or `failed` (with why)."""
    polls = polls_before + 1
    seen = Poll(polls=polls, last_status=prediction.status, checked_at=now)

    def failed(code: str, message: str) -> Poll:
        return replace(seen, status=FAILED, error=ErrorDetail(code, message))

    if prediction.status == "completed":
        if not prediction.outputs:
            return failed("no_outputs", "the prediction completed without outputs")
        return Poll(
            status=COMPLETED,
            polls=polls,
            last_status=prediction.status,
            checked_at=now,
            outputs=tuple(prediction.outputs),
            has_nsfw_contents=tuple(prediction.has_nsfw_contents),
            execution_time_ms=prediction.execution_time_ms,
        )
    if prediction.status in TERMINAL_FAILURES:
        return failed(
            f"generation_{prediction.status}",
            prediction.error or f"WaveSpeed reported status {prediction.status}",
        )
    if prediction.status not in IN_PROGRESS:
        return failed(
            "unknown_status", f"WaveSpeed reported an unknown status {prediction.status!r}"
        )
    if now >= schedule.deadline_at:
        return failed(
            "deadline_passed",
            f"the generation was still {prediction.status} when the deadline passed; the task "
            f"may still finish on WaveSpeed (prediction {prediction_id}), outputs are kept "
            "there for 7 days",
        )
    # Never sleep past the deadline: the last poll lands on it (at most a second late), even
    # if that makes this one wait shorter than the floor.
    wait = min(schedule.next_wait(polls), int(schedule.deadline_at - now) + 1)
    return Poll(
        status=WAITING,
        polls=polls,
        last_status=prediction.status,
        checked_at=now,
        wait_seconds=wait,
    )
