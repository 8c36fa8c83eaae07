"""Poll-schedule benchmark: status checks and detection lag of a ~5-minute generation.

This is a simulation, not a timed run: waiting minutes per point would measure nothing but
the sleep. A virtual clock drives the workflow's loop exactly as the state machine does
("Wait for generation" for `poll.wait_seconds`, then "Check prediction status"), through the
real `poll_prediction` (and so `next_wait`) under the default `PollSchedule`, against a
scripted API that reports `completed` from the generation's finish time on. The Lambda run
time and state transitions are taken as zero, so the lag is the schedule's alone.
"""

from __future__ import annotations

from kling_pipeline.job.workflow import WAITING, JobSummary, WorkflowState
from kling_pipeline.poll import poll_prediction
from kling_pipeline.settings import PollSchedule
from kling_pipeline.wavespeed import Prediction

from .common import Figure

#: Generations finishing between 4.5 and 5.5 minutes after the submit, evenly spread.
FINISH_FROM_S = 270.0
FINISH_TO_S = 330.0
POINTS = 101


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _ScriptedApi:
    """Answers status reads from the virtual clock; never opens a connection."""

    def __init__(self, clock: _VirtualClock, finishes_at: float) -> None:
        self._clock = clock
        self._finishes_at = finishes_at

    def read_prediction(self, prediction_id: str) -> Prediction:
        if self._clock() >= self._finishes_at:
            return Prediction(prediction_id, "completed", outputs=["https://example.invalid/0"])
        return Prediction(prediction_id, "processing")


def detect(finishes_at: float, schedule: PollSchedule) -> tuple[int, float]:
    """Status checks until the completion is seen, and how long after it finished."""
    clock = _VirtualClock()
    api = _ScriptedApi(clock, finishes_at)
    # The state the submit function hands to the workflow (Admission, WorkflowState.start).
    job = JobSummary(job_id="bench", input={"prompt": "bench"}, source={"type": "bench"})
    state = WorkflowState.start(job, "bench", schedule, clock.now)
    while state.poll.status == WAITING:
        clock.now += state.poll.wait_seconds or 0
        state = state.with_poll(poll_prediction(state, api, clock=clock))
    if state.poll.status != "completed":
        raise RuntimeError(f"a generation finishing at {finishes_at}s was not detected")
    return state.poll.polls, clock.now - finishes_at


def run() -> list[Figure]:
    # clamp() is what settings_from applies to every configured schedule.
    schedule = PollSchedule().clamp()
    step = (FINISH_TO_S - FINISH_FROM_S) / (POINTS - 1)
    results = [detect(FINISH_FROM_S + i * step, schedule) for i in range(POINTS)]
    polls = sum(count for count, _ in results) / POINTS
    lag = sum(delay for _, delay in results) / POINTS
    return [
        Figure("polls_per_job_5min", round(polls, 1), "polls", "<=20"),
        Figure("detection_lag_s_5min", round(lag, 1), "s", "<=10"),
    ]
