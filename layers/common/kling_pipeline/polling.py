"""Old entry point of the poll step, kept for bench/schedule.py until it imports `poll`."""

from __future__ import annotations

import time
from collections.abc import Callable

from .job.workflow import Poll, Schedule
from .poll import decide
from .types import Json
from .wavespeed import WaveSpeedClient


def check_prediction(
    state: Json, api: WaveSpeedClient, clock: Callable[[], float] = time.time
) -> Json:
    """One status read on a raw execution state; returns the new `poll` object."""
    prediction_id = str(state["prediction"]["id"])
    prediction = api.check_prediction(prediction_id)
    previous = Poll.from_dict(state.get("poll") or {})
    schedule = Schedule.from_dict(state["schedule"])
    return decide(schedule, previous.polls, prediction_id, prediction, clock()).to_dict()
