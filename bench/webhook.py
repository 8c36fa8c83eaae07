"""Webhook benchmarks: detection lag, state transitions and status reads per job, measured on
the local pipeline (real ASL in moto, the simulator delivering signed webhooks).

The lag is measured end to end: a watcher notes when each task turns `completed` at the
simulator, and the execution history says when "Store video and notify" was entered. The
transition count of a 5-minute job is read from one execution's history, the job and the
fallback scaled by the same factor (the state path depends on their ratio, not on seconds).
The polling figures of the same job come from the poll-schedule simulation (bench/schedule.py)
and the ASL's per-round cost: the timed wait, the check and the Choice after it.
"""

from __future__ import annotations

import statistics
import threading
import time
from datetime import datetime
from typing import Any

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.simulator import SimulatorConfig
from kling_pipeline.settings import PollSchedule

from .common import Figure
from .schedule import detect

LAG_JOBS = 12
#: A 5-minute generation and the default 300 s fallback, both scaled by 1/30.
SCALE = 1 / 30
FIVE_MINUTES_S = 300.0
DEFAULT_FALLBACK_S = 300
#: States every job passes outside the wait loop: the start's Choice, and storing
#: ("Store video and notify", "Was the video stored?", "Video delivered").
FIXED_TRANSITIONS = 4
#: One polling round: "Wait before next check", "Check prediction status", "Is the video ready?".
POLL_ROUND = 3


class CompletionWatcher:
    """Notes the wall-clock time at which each simulator task first reports `completed`."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        assert pipeline.simulator is not None
        self._sim = pipeline.simulator
        self.completed_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> CompletionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            for task in self._sim.tasks():
                if task["status"] == "completed":
                    self.completed_at.setdefault(str(task["id"]), time.time())


def _history(pipeline: LocalPipeline, job_id: str) -> list[dict[str, Any]]:
    arn = f"{pipeline.state_machine_arn}:{job_id}".replace(":stateMachine:", ":execution:")
    answer = pipeline.sfn.get_execution_history(executionArn=arn, maxResults=1000)
    return [dict(event) for event in answer["events"]]


def _entered(events: list[dict[str, Any]]) -> list[tuple[str, datetime]]:
    return [
        (e["stateEnteredEventDetails"]["name"], e["timestamp"])
        for e in events
        if "stateEnteredEventDetails" in e
    ]


def detection_lag() -> float:
    """Median seconds from completion at the simulator to the store step, default schedule."""
    sim = SimulatorConfig(generation_seconds=2.0, processing_after_seconds=0.1)
    options = LocalOptions(
        simulator=sim,
        parameter_overrides={
            "WebhookFallbackSeconds": str(DEFAULT_FALLBACK_S),
            "PollFirstWaitSeconds": "60",
            "PollIntervalSeconds": "15",
            "PollMaxIntervalSeconds": "60",
        },
    )
    with LocalPipeline(options) as pipeline, CompletionWatcher(pipeline) as watcher:
        for n in range(LAG_JOBS):
            pipeline.send_prompt(f"Benchmark scene {n}", job_id=f"lag-{n}")
        pipeline.run_until_idle(120)
        assert pipeline.simulator is not None
        lags = []
        for task in pipeline.simulator.tasks():
            # Each prompt names its job: "Benchmark scene <n>" is job lag-<n>.
            job_id = "lag-" + str(task["prompt"]).rsplit(" ", 1)[1]
            stored = dict(_entered(_history(pipeline, job_id)))["Store video and notify"]
            lags.append(stored.timestamp() - watcher.completed_at[str(task["id"])])
    if len(lags) < LAG_JOBS:
        raise RuntimeError(f"only {len(lags)} of {LAG_JOBS} jobs were stored")
    return statistics.median(lags)


def five_minute_job() -> tuple[int, int]:
    """(state transitions, status reads) of one scaled 5-minute job with webhooks."""
    sim = SimulatorConfig(generation_seconds=FIVE_MINUTES_S * SCALE, processing_after_seconds=0.1)
    options = LocalOptions(
        simulator=sim,
        # Below the template's 30 s floor on purpose: the scaled stand-in for 300 s.
        template_overrides={"WebhookFallbackSeconds": str(int(DEFAULT_FALLBACK_S * SCALE))},
    )
    with LocalPipeline(options) as pipeline:
        pipeline.send_prompt("A five-minute generation", job_id="five-min")
        pipeline.run_until_idle(120)
        transitions = len(_entered(_history(pipeline, "five-min")))
        assert pipeline.simulator is not None
        reads = pipeline.simulator.stats()["result_requests"]
    return transitions, reads


def run() -> list[Figure]:
    lag = detection_lag()
    transitions, reads = five_minute_job()
    polls, _ = detect(FIVE_MINUTES_S, PollSchedule().clamp())
    polling_transitions = FIXED_TRANSITIONS + POLL_ROUND * polls
    return [
        Figure("webhook_detection_lag_s", round(lag, 2), "s", "<=2"),
        Figure("transitions_per_job_webhook", transitions, "transitions", "<=8"),
        Figure("transitions_per_job_polling", polling_transitions, "transitions", "<=80"),
        Figure("status_reads_per_job_webhook", reads, "reads", "<=2"),
    ]
