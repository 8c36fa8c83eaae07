"""Checks a prediction once and decides the workflow's next step and wait, from state data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import PermanentError
from .wavespeed import IN_PROGRESS, TERMINAL_FAILURES, WaveSpeedClient

Json = dict[str, Any]


def next_wait(schedule: Json, polls: int) -> int:
    """The wait before poll number `polls + 1`: interval grown by backoff, capped, floored."""
    floor = int(schedule.get("min_interval_s", 5))
    interval = float(schedule.get("interval_s", 15)) * float(schedule.get("backoff", 1.0)) ** max(
        0, polls - 1
    )
    capped = min(interval, float(schedule.get("max_interval_s", 60)))
    return max(floor, int(round(capped)))


def check_prediction(
    state: Json, api: WaveSpeedClient, clock: Callable[[], float] = time.time
) -> Json:
    """One status read; returns the new `poll` object of the execution state.

    `status` is `completed`, `waiting` (with `wait_seconds`) or `failed` (with `error`).
    """
    prediction_id = state["prediction"]["id"]
    schedule: Json = state["schedule"]
    polls = int(state.get("poll", {}).get("polls", 0)) + 1
    prediction = api.check_prediction(prediction_id)
    base: Json = {"polls": polls, "last_status": prediction.status, "checked_at": clock()}
    if prediction.status == "completed":
        if not prediction.outputs:
            raise PermanentError("the prediction completed without outputs", code="no_outputs")
        return {
            **base,
            "status": "completed",
            "outputs": prediction.outputs,
            "has_nsfw_contents": prediction.has_nsfw_contents,
            "execution_time_ms": prediction.execution_time_ms,
        }
    if prediction.status in TERMINAL_FAILURES:
        return {
            **base,
            "status": "failed",
            "error": {
                "code": f"generation_{prediction.status}",
                "message": prediction.error or f"WaveSpeed reported status {prediction.status}",
            },
        }
    if prediction.status not in IN_PROGRESS:
        return {
            **base,
            "status": "failed",
            "error": {
                "code": "unknown_status",
                "message": f"WaveSpeed reported an unknown status {prediction.status!r}",
            },
        }
    wait = next_wait(schedule, polls)
    deadline = float(schedule["deadline_at"])
    now = clock()
    if now >= deadline:
        return {
            **base,
            "status": "failed",
            "error": {
                "code": "deadline_passed",
                "message": f"the generation was still {prediction.status} when the "
                "deadline passed; the task may still finish on WaveSpeed "
                f"(prediction {prediction_id}), outputs are kept there for 7 days",
            },
        }
    # Never sleep past the deadline: the last poll lands on it (at most a second late), even
    # if that makes this one wait shorter than the floor.
    return {**base, "status": "waiting", "wait_seconds": min(wait, int(deadline - now) + 1)}
