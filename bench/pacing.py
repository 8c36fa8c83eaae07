"""Pacing benchmarks: a scaled WaveSpeed tier's start rate reached, and no job given up.

Both run the real pipeline locally (moto from template.yaml, the submit handler, the shared
start schedule in the jobs table) against the simulator with a tier preset and a time scale,
the pipeline's rate window scaled alike. Several emulated pollers stand for concurrent submit
functions.

- `tier_throughput_ratio`: Silver (500 starts a minute), 3x its per-minute volume queued at
  once; starts WaveSpeed accepted in one scaled minute from the first ÷ 500. Workflows stay in
  their first Wait, so polls and copies do not compete with the submits being measured. This
  machine cannot start 500 videos in a few seconds through moto, so the minute is 30 s.
- `bronze_file_50_give_ups`: a 50-line prompt file on Bronze (2 a minute, a minute of 3 s),
  run to the end: jobs ending `retries_exhausted` (goal 0) and jobs completed (goal 50).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.simulator import SimulatorConfig

from .common import Figure, info

SILVER_SCALE = 0.5
BRONZE_SCALE = 0.05
POLLERS = 4
PARKED_WAIT_S = 3600


def _paced_env(scale: float) -> dict[str, str]:
    # WaveSpeed's 60 s window and the 2 s margin, on the simulator's clock.
    return {
        "RATE_WINDOW_S": str(60 * scale),
        "RATE_MARGIN_S": str(max(0.1, 2 * scale)),
        "PACE_MAX_WAIT_S": str(min(3.0, 60 * scale / 3)),
    }


@contextmanager
def _pollers(pipeline: LocalPipeline, count: int) -> Iterator[None]:
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                handled = pipeline.poll_queues_once()
            except ClientError:
                # moto may hand one message to two concurrent receivers; the second delete
                # is refused. SQS is at-least-once too: the pipeline treats it as a duplicate.
                handled = 0
            if not handled:
                stop.wait(0.05)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def _send(pipeline: LocalPipeline, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
        ]
        pipeline.sqs.send_message_batch(QueueUrl=pipeline.job_queue_url, Entries=entries)  # type: ignore[arg-type]


def tier_throughput() -> list[Figure]:
    limit = 500
    options = LocalOptions(
        simulator=SimulatorConfig(tier="silver", time_scale=SILVER_SCALE),
        parameter_overrides={"WaveSpeedTier": "silver", "MaxReceiveCount": "2"},
        env=_paced_env(SILVER_SCALE),
        poll_first_wait_s=PARKED_WAIT_S,
        poll_deadline_s=2 * PARKED_WAIT_S,
    )
    minute_s = 60 * SILVER_SCALE
    with LocalPipeline(options) as pipeline:
        assert pipeline.simulator is not None
        sim = pipeline.simulator
        bodies = [
            json.dumps({"prompt": f"a silver kite {i}", "job_id": f"silver-{i}"})
            for i in range(3 * limit)
        ]
        _send(pipeline, bodies)
        with _pollers(pipeline, POLLERS):
            while sim.stats()["tasks_created"] == 0:
                time.sleep(0.01)
            first = time.monotonic()
            time.sleep(minute_s)
            in_minute = sim.stats()["tasks_created"]
            info(f"tier: {in_minute} starts in the first scaled minute ({minute_s:.0f} s)")
            stats = sim.stats()
        exhausted = sum(
            1
            for n in pipeline.notifications
            if (n.get("error") or {}).get("code") == "retries_exhausted"
        )
        duplicates = stats["tasks_created"] - len(
            {job for job, state in pipeline.job_states().items() if state != "submitting"}
        )
        info(f"tier: {time.monotonic() - first:.0f} s measured, stats {stats}")
    return [
        Figure("tier_throughput_ratio", round(in_minute / limit, 3), "ratio", ">=0.9"),
        Figure("tier_retries_exhausted", exhausted, "jobs", "<=0"),
        Figure("tier_duplicate_posts", max(0, duplicates), "posts", "<=0"),
    ]


def bronze_file() -> list[Figure]:
    options = LocalOptions(
        simulator=SimulatorConfig(
            tier="bronze",
            time_scale=BRONZE_SCALE,
            generation_seconds=0.3,
            processing_after_seconds=0.1,
        ),
        parameter_overrides={"WaveSpeedTier": "bronze"},
        env=_paced_env(BRONZE_SCALE),
        poll_deadline_s=600,
    )
    lines = "\n".join(json.dumps({"prompt": f"a bronze bell {i}"}) for i in range(50))
    with LocalPipeline(options) as pipeline:
        pipeline.upload("bronze-50.jsonl", lines.encode())
        with _pollers(pipeline, 1):
            result = pipeline.run_until_idle(300)
    codes = [(n.get("error") or {}).get("code") for n in result.notifications]
    completed = sum(1 for n in result.notifications if n["status"] == "completed")
    info(f"bronze: {completed} completed in {result.elapsed_s:.0f} s, errors {set(codes) - {None}}")
    return [
        Figure("bronze_file_50_give_ups", codes.count("retries_exhausted"), "jobs", "<=0"),
        Figure("bronze_file_50_completed", completed, "jobs", ">=50"),
    ]


def run() -> list[Figure]:
    return [*bronze_file(), *tier_throughput()]
