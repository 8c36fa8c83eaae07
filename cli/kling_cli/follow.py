"""Follows jobs until each has ended, reporting one line per state change."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kling_pipeline.job.record import TERMINAL

from .jobs import ENDED_BADLY, QUEUED, Execution, JobReader, JobRecord, Json

Sleep = Callable[[float], None]
Emit = Callable[[str], None]
LABELS = {
    QUEUED: "queued (waiting for the submit function)",
    "submitting": "submitting to WaveSpeed",
    "submitted": "submitted",
    "running": "running (waiting for the video)",
}


@dataclass
class Tracked:
    """What is known about one followed job; `ended` once nothing more will change."""

    job_id: str
    view: JobRecord | None = None
    execution: Execution | None = None
    label: str = ""
    ended: bool = False
    outputs: list[Json] = field(default_factory=list)
    error: Json | None = None

    @property
    def outcome(self) -> str:
        """completed / failed / rejected, or what the job was doing when we stopped looking."""
        if self.view is None:
            return QUEUED
        if self.ended and not self.view.terminal:
            return "failed"  # the workflow stopped without a notification
        return self.view.status


@dataclass(frozen=True)
class FollowResult:
    jobs: list[Tracked]
    timed_out: bool

    @property
    def all_completed(self) -> bool:
        return all(job.outcome == "completed" for job in self.jobs)


class Follower:
    """Polls the jobs table (and running workflows) every `interval_s` until all jobs ended.

    `sleep` is the pause between rounds: tests pass one that drives the local pipeline instead.
    """

    def __init__(
        self,
        reader: JobReader,
        *,
        emit: Emit,
        sleep: Sleep = time.sleep,
        interval_s: float = 5.0,
        timeout_s: float = 3900.0,
        link_expires_s: int = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._emit = emit
        self._sleep = sleep
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._link_expires_s = link_expires_s
        self._clock = clock

    def run(
        self,
        job_ids: list[str],
        *,
        discover: Callable[[], list[str]] | None = None,
        expected_discoveries: int = 0,
    ) -> FollowResult:
        """Follows `job_ids`, plus up to `expected_discoveries` more ids `discover` finds."""
        tracked = {job_id: Tracked(job_id) for job_id in job_ids}
        discovered: set[str] = set()
        deadline = self._clock() + self._timeout_s
        while True:
            if discover is not None and len(discovered) < expected_discoveries:
                for job_id in discover():
                    if job_id not in tracked:
                        discovered.add(job_id)
                        tracked[job_id] = Tracked(job_id)
            for job in tracked.values():
                if not job.ended:
                    self._refresh(job)
            waiting_for_more = len(discovered) < expected_discoveries
            if not waiting_for_more and all(job.ended for job in tracked.values()):
                return FollowResult(list(tracked.values()), timed_out=False)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return FollowResult(list(tracked.values()), timed_out=True)
            self._sleep(min(self._interval_s, remaining))

    def _refresh(self, job: Tracked) -> None:
        view = self._reader.get(job.job_id)
        execution = None
        if view is not None and view.execution_arn and view.status in ("running", *TERMINAL):
            execution = self._reader.execution(view)
        if (
            view is not None
            and not view.terminal
            and execution is not None
            and execution.status in ENDED_BADLY
        ):
            # The notification may have landed between our two reads: look once more.
            view = self._reader.get(job.job_id) or view
        job.view, job.execution = view, execution
        if view is None:
            self._show(job, LABELS[QUEUED])
            return
        if view.terminal:
            job.ended = True
            self._settle(job)
            self._show(job, self.describe_end(job))
            return
        if execution is not None and execution.status in ENDED_BADLY:
            job.ended = True
            job.error = {
                "code": execution.error or execution.status,
                "message": f"the workflow ended {execution.status} without a notification "
                f"({execution.cause or 'see its execution history'})",
            }
            self._show(job, self.describe_end(job))
            return
        label = LABELS.get(view.status, view.status)
        if view.status == "submitted" and view.prediction_id:
            label = f"{label} (prediction {view.prediction_id})"
        self._show(job, label)

    def _settle(self, job: Tracked) -> None:
        assert job.view is not None
        if job.view.status == "completed":
            job.outputs = self._reader.outputs(job.job_id, link_expires_s=self._link_expires_s)
        else:
            job.error = self._reader.error(job.view)

    @staticmethod
    def describe_end(job: Tracked) -> str:
        if job.outcome == "completed":
            uris = [str(o.get("uri")) for o in job.outputs]
            return "completed" + (f" -> {', '.join(uris)}" if uris else "")
        error = job.error or {}
        reason = f"{error.get('code')}: {error.get('message')}" if error else "no reason recorded"
        return f"{job.outcome} ({reason})"

    def _show(self, job: Tracked, label: str) -> None:
        if label != job.label:
            job.label = label
            self._emit(f"{time.strftime('%H:%M:%S')}  {job.job_id}  {label}")
