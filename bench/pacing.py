"""Pacing benchmarks: a scaled WaveSpeed tier's start rate reached, and no job given up.

- `tier_throughput_ratio`: Silver (500 starts a minute), 3x its per-minute volume queued at
  once; starts the simulator accepted in one scaled minute from the first ÷ 500. It runs the
  submit function's real code (batch processor, admission, the pacer with its production
  settings, the WaveSpeed client) against the simulator in its own process (Silver preset,
  time scale 0.5), with as many concurrent submit functions as the tier's sizing in
  template.yaml; the AWS side is in memory with the same conditional semantics
  (`pacing_harness`). Through moto in one process the pipeline tops out near 4 starts a
  second, which would measure this machine, not the design. So that the figure is not bounded
  by the harness either, the same harness is first run unpaced against an uncapped simulator:
  `tier_harness_headroom` is that capacity ÷ the scaled rate (goal >= 2). The figure can fail:
  `python -m bench.pacing tier --paced-rate 250` (starts spaced twice too wide) gives ~0.5.
  Checked alongside: `tier_retries_exhausted` and `tier_duplicate_posts` (goal 0), and the
  429s the simulator answered (`tier_429s`, goal 0: the spacing keeps under its sliding count).
- `bronze_file_50_give_ups`: a 50-line prompt file on Bronze (2 a minute, a minute of 3 s),
  run to the end through the whole local pipeline (moto, the state machine): jobs ending
  `retries_exhausted` (goal 0) and jobs completed (goal 50).
- `queue_hold_sqs_*` / `queue_at_wavespeed_*`: see `pacing_queueing`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import urllib3

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.poller import concurrent_pollers
from kling_local.simulator import SimulatorConfig

from . import pacing_queueing
from .common import ROOT, Figure, child_env, info

if TYPE_CHECKING:
    from .pacing_harness import TierSizing

SILVER_SCALE = 0.5
BRONZE_SCALE = 0.05
POLLERS = 4
PARKED_WAIT_S = 3600


def paced_env(scale: float) -> dict[str, str]:
    """The submit functions' pacing settings for a simulator running at `scale`: WaveSpeed's
    60 s window, the 2 s margin and the longest sleep for a turn, on the simulator's clock."""
    return {
        "RATE_WINDOW_S": str(60 * scale),
        "RATE_MARGIN_S": str(max(0.1, 2 * scale)),
        "PACE_MAX_WAIT_S": str(min(3.0, 60 * scale / 3)),
    }


def _send(pipeline: LocalPipeline, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
        ]
        pipeline.sqs.send_message_batch(QueueUrl=pipeline.job_queue_url, Entries=entries)  # type: ignore[arg-type]


@contextmanager
def _simulator(*args: str) -> Iterator[tuple[str, str]]:
    """`python -m kling_local.simulator ARGS` in its own process: (base URL, API key)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kling_local.simulator", "--port", "0", *args],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        banner = re.search(r"listening on (\S+) \(api key: (\S+)\)", process.stdout.readline())
        if banner is None:
            raise RuntimeError("the simulator did not start")
        yield banner.group(1), banner.group(2)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stats(http: urllib3.PoolManager, base: str) -> dict[str, int]:
    answer: dict[str, int] = json.loads(http.request("GET", f"{base}/_sim/stats").data)
    return answer


def _jobs(prefix: str, count: int) -> list[str]:
    return [
        json.dumps({"prompt": f"a {prefix} kite {i}", "job_id": f"{prefix}-{i}"})
        for i in range(count)
    ]


def harness_capacity(sizing: TierSizing, jobs: int = 600) -> float:
    """Starts a second the harness itself can make: the same submit side, unpaced, against an
    uncapped simulator (the time from the first start to the last)."""
    from .pacing_harness import SubmitSide, wait_until

    http = urllib3.PoolManager()
    with _simulator("--generation-seconds", "3600") as (base, key):
        side = SubmitSide.build(sizing, api_base=base, api_key=key, scale=1.0, paced_rate=None)
        for body in _jobs("capacity", jobs):
            side.queue.send(body)
        with side.running():
            wait_until(lambda: _stats(http, base)["tasks_created"] > 0, 60)
            first = time.monotonic()
            wait_until(lambda: side.paid_jobs() >= jobs, 120, step_s=0.05)
            elapsed = time.monotonic() - first
    return (jobs - 1) / elapsed


def tier_throughput(*, paced_rate: int | None = None, scale: float = SILVER_SCALE) -> list[Figure]:
    """`paced_rate`: what the pacer keeps to instead of the tier's rate (to see the figure
    fail: half the rate spaces starts twice as wide)."""
    # Imported here: the domain package's logger reads its level when first imported, and the
    # local pipeline of the other benchmarks sets that level (ERROR) when it starts.
    from .pacing_harness import SubmitSide, TierSizing, wait_until

    sizing = TierSizing.of("silver")
    limit = sizing.videos_per_minute
    scaled_rate = limit / 60 / scale
    capacity = harness_capacity(sizing)
    info(
        f"tier: harness capacity {capacity:.1f} starts/s unpaced; "
        f"scaled Silver needs {scaled_rate:.1f}/s"
    )
    minute_s = 60 * scale
    http = urllib3.PoolManager()
    with _simulator(
        "--tier", "silver", "--time-scale", str(scale), "--generation-seconds", "3600"
    ) as (
        base,
        key,
    ):
        side = SubmitSide.build(
            sizing, api_base=base, api_key=key, scale=scale, paced_rate=paced_rate or limit
        )
        jobs = 3 * limit
        for body in _jobs("silver", jobs):
            side.queue.send(body)
        with side.running():
            wait_until(lambda: _stats(http, base)["tasks_created"] > 0, 60, step_s=0.005)
            first = time.monotonic()
            per_minute = []
            for minute in range(1, 4):
                time.sleep(max(0.0, first + minute * minute_s - time.monotonic()))
                per_minute.append(_stats(http, base)["tasks_created"])
            in_minute = per_minute[0]
            info(f"tier: starts after 1, 2, 3 scaled minutes ({minute_s:.0f} s each): {per_minute}")
            # The rest of the backlog, so every job's outcome is counted.
            wait_until(lambda: side.paid_jobs() + side.give_ups() >= jobs, 8 * minute_s, step_s=0.1)
            wait_until(lambda: side.queue.backlog() == 0, 2 * minute_s, step_s=0.1)
        stats = _stats(http, base)
    exhausted = side.give_ups()
    duplicates = stats["tasks_created"] - side.paid_jobs()
    throttled = stats["submit_requests"] - stats["tasks_created"]
    info(
        f"tier: {side.paid_jobs()} of {jobs} jobs paid, {side.queue.resent} re-sends for pacing, "
        f"{side.invocations} invocations, {len(side.queue.dead_letters)} dead letters, "
        f"stats {stats}"
    )
    return [
        Figure("tier_throughput_ratio", round(in_minute / limit, 3), "ratio", ">=0.9"),
        Figure("tier_harness_headroom", round(capacity / scaled_rate, 2), "ratio", ">=2"),
        Figure("tier_retries_exhausted", exhausted, "jobs", "<=0"),
        Figure("tier_duplicate_posts", max(0, duplicates), "posts", "<=0"),
        Figure("tier_429s", throttled, "answers", "<=0"),
        Figure("tier_jobs_not_started", jobs - side.paid_jobs(), "jobs", "<=0"),
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
        env=paced_env(BRONZE_SCALE),
        poll_deadline_s=600,
    )
    lines = "\n".join(json.dumps({"prompt": f"a bronze bell {i}"}) for i in range(50))
    with LocalPipeline(options) as pipeline:
        pipeline.upload("bronze-50.jsonl", lines.encode())
        with concurrent_pollers(pipeline.poll_queues_once, 1):
            result = pipeline.run_until_idle(300)
    codes = [(n.get("error") or {}).get("code") for n in result.notifications]
    completed = sum(1 for n in result.notifications if n["status"] == "completed")
    info(f"bronze: {completed} completed in {result.elapsed_s:.0f} s, errors {set(codes) - {None}}")
    return [
        Figure("bronze_file_50_give_ups", codes.count("retries_exhausted"), "jobs", "<=0"),
        Figure("bronze_file_50_completed", completed, "jobs", ">=50"),
    ]


def run() -> list[Figure]:
    return [*bronze_file(), *tier_throughput(), *pacing_queueing.run()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pacing")
    parser.add_argument(
        "which", choices=("tier", "bronze", "queueing", "all"), nargs="?", default="all"
    )
    parser.add_argument(
        "--paced-rate", type=int, default=None, help="videos/minute the pacer keeps to (tier)"
    )
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    if args.which in ("bronze", "all"):
        figures += bronze_file()
    if args.which in ("tier", "all"):
        figures += tier_throughput(paced_rate=args.paced_rate)
    if args.which in ("queueing", "all"):
        figures += pacing_queueing.run()
    for figure in figures:
        print(figure.line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
