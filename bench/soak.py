"""Fault soak: many jobs through injected faults, checked against the pipeline's three promises.

`make soak` runs `python -m bench.soak`: N jobs (unique prompts) through the local pipeline with
duplicated deliveries (lost SQS deletes, the same job_id sent twice), a faulty WaveSpeed
simulator (429s, 5xx polls, failed/cancelled generations, cut and truncated downloads; and, as the
real service does, queueing behind a concurrency cap, status-read outages, coded failures and
moderation with refunds, submit answers lost after the task was made), invalid messages and a
malformed prompt file. It prints a table of counts and exits 1 when any job was
paid twice, lost its video, or did not get exactly one correct terminal notification.

By default it runs on a WaveSpeed tier, pacing on: the simulator's Silver preset (500 starts a
minute, sliding window, 429 over it) on a clock slowed to `tier_scale` 2 (a "minute" of 120 s,
so 4 starts a second, about what the local pipeline takes: the shared start schedule binds),
the pipeline's `WaveSpeedTier=silver` with its rate window scaled alike. Jobs then wait for
their turn (re-sent, no receive spent) besides the injected 429s, and the table counts both
and checks that no job was given up (`--tier none`: no cap, pacing off).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.simulator import SimulatorConfig
from kling_local.simulator.config import TIERS
from kling_pipeline.submit.pacing_table import NEXT_START

from .pacing import paced_env
from .soak_real import rows as real_service_rows
from .soak_verify import PacingCounts, SoakReport, verify
from .soak_workload import RealService, SoakPipeline, Upload, Workload, iter_sends, plan_workload

MIN_PART_BYTES = 5 * 1024 * 1024
#: Two parts per video at the minimum part size: truncations then abort uploads holding parts.
DEFAULT_OUTPUT_SIZE = 6_000_000


class _LineCounter(io.TextIOBase):
    """Swallows what handlers print to stdout, counting the lines."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


@dataclass(frozen=True)
class SoakConfig:
    """One soak run: the workload's size and the fault rates it is driven through."""

    jobs: int = 500
    seed: int = 1
    timeout_s: float = 900.0
    duplicate_rate: float = 0.10
    invalid_rate: float = 0.01
    submit_429_rate: float = 0.05
    poll_5xx_rate: float = 0.03
    fail_rate: float = 0.02
    cancel_rate: float = 0.01
    cut_once_rate: float = 0.02
    truncate_rate: float = 0.01
    #: Webhooks are on (the default): some are lost (the fallback finds those jobs), some twice.
    webhook_lost_rate: float = 0.05
    webhook_duplicate_rate: float = 0.05
    generation_seconds: float = 0.75
    output_size: int | None = DEFAULT_OUTPUT_SIZE
    progress: bool = True
    #: Queueing, status-read outages, coded failures and ambiguous submits.
    real: RealService = RealService()
    #: The account's tier preset (None: no start-rate cap, pacing off), on a clock of this
    #: scale; `make soak` runs Silver x2 (see the module doc).
    tier: str | None = None
    tier_scale: float = 2.0
    #: Tasks at once with a tier: paced starts come at most 4 a second, so a cap of 2 keeps
    #: tasks queueing at WaveSpeed as the unpaced burst does behind the cap of 6.
    tier_max_concurrency: int = 2

    @property
    def time_scale(self) -> float:
        return self.tier_scale if self.tier else 1.0

    def simulator(self) -> SimulatorConfig:
        return SimulatorConfig(
            tier=self.tier,
            time_scale=self.time_scale,
            generation_seconds=self.generation_seconds,
            processing_after_seconds=min(0.1, self.generation_seconds),
            output_size=self.output_size,
            seed=self.seed,
            submit_429_rate=self.submit_429_rate,
            poll_5xx_rate=self.poll_5xx_rate,
            fail_rate=self.fail_rate,
            cancel_rate=self.cancel_rate,
            cut_once_rate=self.cut_once_rate,
            truncate_rate=self.truncate_rate,
            webhook_lost_rate=self.webhook_lost_rate,
            webhook_duplicate_rate=self.webhook_duplicate_rate,
            **self._account_fields(),
        )

    def options(self) -> LocalOptions:
        return LocalOptions(
            simulator=self.simulator(),
            poll_first_wait_s=1,
            poll_interval_s=1,
            # Generations take under a second; the deadline only has to outlast queueing.
            poll_deadline_s=max(300, int(self.timeout_s)),
            # The smallest part S3 allows, so videos over 5 MiB stream as multipart uploads and
            # a cut or truncated download leaves a started upload behind to be aborted.
            env={"COPY_PART_BYTES": str(MIN_PART_BYTES), **self.real.env(), **self._pacing_env()},
            parameter_overrides={"WaveSpeedTier": self.tier} if self.tier else {},
        )

    def _account_fields(self) -> dict[str, Any]:
        fields = self.real.simulator_fields(self.time_scale)
        if self.tier:
            fields["max_concurrency"] = self.tier_max_concurrency
        return fields

    def _pacing_env(self) -> dict[str, str]:
        return paced_env(self.tier_scale) if self.tier else {}


def _say(config: SoakConfig, text: str) -> None:
    if config.progress:
        print(f"[soak] {text}", file=sys.stderr, flush=True)


def feed(pipeline: SoakPipeline, workload: Workload) -> None:
    """Sends every delivery and upload; ids derived from SQS message ids are recorded."""
    for item in iter_sends(workload):
        if isinstance(item, Upload):
            pipeline.upload(item.name, item.data)
            continue
        body, job = item
        message_id = pipeline.send_message(body)
        if job.job_id is None:
            job.job_id = f"msg-{message_id}"


def run_soak(config: SoakConfig, pipeline_type: type[SoakPipeline] = SoakPipeline) -> SoakReport:
    """Plans the workload, drives the pipeline until idle, and checks the outcome."""
    workload = plan_workload(
        config.jobs,
        config.seed,
        invalid_rate=config.invalid_rate,
        duplicate_rate=config.duplicate_rate,
        ambiguous_rate=config.real.ambiguous_rate,
    )
    pipeline = pipeline_type(config.options(), workload.lost)
    with pipeline:
        _say(config, f"{config.jobs} jobs, {len(workload.deliveries)} messages, seed {config.seed}")
        tap = PacingTap(pipeline)
        started = time.monotonic()
        # Powertools prints an EMF blob whenever a metric reaches 100 values, even with
        # metrics disabled (they are never flushed locally): keep the table readable.
        printed = _LineCounter()
        with contextlib.redirect_stdout(printed):
            feed(pipeline, workload)
            result = pipeline.run_until_idle(config.timeout_s)
        wall_s = time.monotonic() - started
        _say(config, f"idle after {wall_s:.1f} s; checking outcomes")
        report = verify(workload, pipeline, result, wall_s)
    report.pacing = pacing_counts(config, report, tap)
    if report.pacing.given_up:
        report.violations.append(
            f"{report.pacing.given_up} job(s) ended retries_exhausted on a paced tier: waiting "
            "for the account's rate must never spend a job's receives"
        )
    if printed.lines:
        report.notes.append(
            f"handlers printed {printed.lines} line(s) to stdout during the run (Powertools "
            "EMF metric blobs: POWERTOOLS_METRICS_DISABLED does not stop the 100-value flush)"
        )
    return report


class PacingTap:
    """Counts, from the submit functions' own AWS calls, how often pacing held a job back:
    turns taken behind others on the shared schedule (the job slept for its turn or was
    re-sent for a far one) and re-sends to the job queue (far turns, and 429s not absorbed by
    the client's own retries; parking in the DLQ goes to another queue and prompt-file
    fan-out sends batches)."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        from kling_pipeline import clients

        self._jobs = pipeline.job_queue_url
        self._lock = threading.Lock()
        self.waits = 0
        self.resends = 0
        clients.sqs().meta.events.register("before-parameter-build.sqs.SendMessage", self._on_send)
        clients.dynamodb().meta.events.register("after-call.dynamodb.UpdateItem", self._on_update)

    def _on_send(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("QueueUrl") == self._jobs:
            with self._lock:
                self.resends += 1

    def _on_update(self, parsed: dict[str, Any], **_: Any) -> None:
        # Only the schedule's advancing form returns its attribute: a turn after an earlier one
        # still to come. An idle schedule restarts at `now` and returns nothing.
        if "Error" not in parsed and NEXT_START in parsed.get("Attributes", {}):
            with self._lock:
                self.waits += 1


def pacing_counts(config: SoakConfig, report: SoakReport, tap: PacingTap) -> PacingCounts:
    limits = config.simulator().limits()
    return PacingCounts(
        tier=f"{config.tier} x{config.tier_scale:g}" if config.tier else "none",
        starts_per_minute=limits.videos_per_minute if limits else 0,
        minute_s=60 * config.time_scale,
        paced_waits=tap.waits,
        paced_resends=tap.resends,
        answered_429=report.submits_refused,
        given_up=report.outcomes.get("failed/retries_exhausted", 0),
    )


Row = tuple[str, object, object]


def _rows(r: SoakReport) -> list[tuple[str, list[Row]]]:
    completed = r.outcomes.get("completed", 0)
    return [
        (
            "Workload",
            [
                ("job ids (valid + invalid + prompt-file lines)", r.jobs, None),
                ("valid jobs", r.valid_jobs, None),
                ("bytes per video", r.video_bytes, None),
                ("invalid messages", r.invalid_messages, None),
                ("invalid prompt-file lines", r.invalid_file_lines, None),
                ("malformed prompt files", r.malformed_files, None),
                ("messages sent (resends included)", r.messages_sent, None),
                ("prompt files uploaded", r.uploads, None),
                ("same job_id sent in a second message", r.same_id_resends, None),
                ("deliveries redelivered after a lost delete", r.lost_deletes_applied,
                 r.lost_deletes_planned),
            ],
        ),
        (
            "Injected faults (simulator)",
            [
                ("submits answered 429 (no task created)", r.submits_refused, None),
                ("status polls (a share answered 5xx)", r.status_polls, None),
                ("generations failed", r.generations_failed, None),
                ("generations cancelled", r.generations_cancelled, None),
                ("downloads cut off once", r.cut_once_tasks, None),
                ("downloads truncated for good", r.truncated_tasks, None),
            ],
        ),
        ("The real service (simulator)", real_service_rows(r.real)),
        (
            "Never pay twice",
            [
                ("paid submissions (tasks_created) = valid jobs paid", r.paid_submissions,
                 r.jobs_paid),
                ("duplicate paid submissions", r.duplicate_paid, 0),
                ("paid tasks matching no valid job", r.unknown_tasks, 0),
            ],
        ),
        (
            "Exactly one terminal notification per job",
            [
                ("jobs with exactly one notification", r.jobs_notified_once, r.jobs),
                ("jobs without a notification", r.jobs_without_notification, 0),
                ("jobs with two or more", r.jobs_notified_twice_or_more, 0),
                ("notifications for unknown job ids", r.unexpected_notifications, 0),
                ("jobs with the wrong status or error code", r.wrong_outcome, 0),
                *((f"  {outcome}", count, None) for outcome, count in r.outcomes.items()),
            ],
        ),
        (
            "Never lose a paid video",
            [
                ("completed outputs: S3 = simulator = notification sha256",
                 r.completed_outputs_verified, completed),
                ("output mismatches", r.output_mismatches, 0),
                ("cut-off downloads resumed and completed", r.cut_once_recovered,
                 r.cut_once_tasks),
                ("completed outputs uploaded in two or more parts", r.multipart_outputs, None),
                ("objects left under videos/ by failed jobs", r.objects_of_failed_jobs, 0),
                ("objects belonging to no completed output", r.stray_objects, 0),
                ("incomplete multipart uploads", r.incomplete_uploads, 0),
            ],
        ),
        (
            "Dead-letter queue",
            [
                ("messages (invalid, malformed file, unknown submits)", r.dead_letters,
                 r.dead_letters_expected),
                ("expected messages missing", r.dead_letters_missing, 0),
                ("unexpected messages", r.dead_letters_unexpected, 0),
                ("extra copies of an expected message", r.dead_letter_extra_copies, 0),
                ("messages without a reason attribute", r.dead_letters_without_reason, 0),
            ],
        ),
        (
            "Pacing (the account's start rate)",
            [
                ("tier (simulator preset x time scale)", r.pacing.tier, None),
                ("starts per scaled minute allowed / minute, s",
                 f"{r.pacing.starts_per_minute}/{r.pacing.minute_s:g}", None),
                ("starts that waited for their turn (slept, or re-sent)", r.pacing.paced_waits,
                 None),
                ("jobs re-sent to the queue to wait (no receive spent)", r.pacing.paced_resends,
                 None),
                ("429s seen (injected + over the account's rate)", r.pacing.answered_429, None),
                ("jobs given up (retries_exhausted)", r.pacing.given_up, 0),
            ],
        ),
        (
            "Throughput (reported, not asserted)",
            [
                ("wall time, s", r.wall_s, None),
                ("jobs per second", r.jobs_per_s, None),
            ],
        ),
    ]  # fmt: skip


def format_report(report: SoakReport, *, max_violations: int = 40) -> str:
    """The readable table the README's reliability section quotes."""
    lines = [f"{'':58}{'observed':>10}{'expected':>10}"]
    for title, rows in _rows(report):
        lines.append(title)
        for label, observed, expected in rows:
            line = f"  {label:<56}{observed!s:>10}"
            if expected is not None:
                verdict = "ok" if observed == expected else "VIOLATED"
                line += f"{expected!s:>10}  {verdict}"
            lines.append(line)
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.violations:
        lines.append(f"{len(report.violations)} guarantee violation(s):")
        lines += [f"  - {text}" for text in report.violations[:max_violations]]
        if len(report.violations) > max_violations:
            lines.append(f"  … and {len(report.violations) - max_violations} more")
    lines.append("SOAK " + ("PASSED" if report.ok else "FAILED"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Many jobs through injected faults; exits 1 when a guarantee is violated.",
    )
    defaults = SoakConfig()
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="job ids (default 500)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--timeout", type=float, default=defaults.timeout_s, help="seconds before giving up"
    )
    parser.add_argument(
        "--output-size",
        type=int,
        default=DEFAULT_OUTPUT_SIZE,
        help="bytes per video (default 6 MB: two multipart parts, so aborts are exercised)",
    )
    parser.add_argument(
        "--tier",
        choices=(*sorted(TIERS), "none"),
        default="silver",
        help="the account's WaveSpeed tier preset, pacing on (default silver; none: no cap)",
    )
    parser.add_argument(
        "--tier-scale",
        type=float,
        default=defaults.tier_scale,
        help="the tier's clock: a rate minute lasts 60 x this many seconds (default 2)",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SoakConfig(
        jobs=args.jobs,
        seed=args.seed,
        timeout_s=args.timeout,
        output_size=args.output_size,
        progress=not args.quiet,
        tier=None if args.tier == "none" else args.tier,
        tier_scale=args.tier_scale,
    )
    try:
        report = run_soak(config)
    except ValueError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print(f"Fault soak: {report.jobs} jobs, seed {config.seed}")
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
