"""The paid tasks: their lifecycle over time, the faults each was dealt, and their outputs."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import faults
from .blobs import Blob, make_blob
from .config import (
    MARKER_CUT_ONCE,
    MARKER_NOT_MP4,
    MARKER_NSFW,
    MARKER_POLL_500_ONCE,
    MARKER_TRUNCATE,
    MARKER_TWO_OUTPUTS,
    MODEL,
    SimulatorConfig,
)
from .wire import now_iso

TERMINAL = ("completed", "failed", "cancelled", "timeout")


@dataclass
class Task:
    """One paid generation, with every fault decided when it was created."""

    id: str
    prompt: str
    params: dict[str, Any]
    created_at: str
    created_monotonic: float
    outcome: str
    error: str
    nsfw: bool
    output_count: int
    cut_once: bool
    truncate: bool
    not_mp4: bool
    poll_500_pending: bool
    blobs: dict[int, Blob] = field(default_factory=dict)
    downloads: dict[int, int] = field(default_factory=dict)


class TaskBook:
    """The task table; callers hold `lock` around anything that reads and then writes it."""

    def __init__(self, config: SimulatorConfig, lock: threading.RLock) -> None:
        self.config = config
        self.lock = lock
        self.rng = random.Random(config.seed)
        self._tasks: dict[str, Task] = {}

    def get(self, task_id: str) -> Task | None:
        with self.lock:
            return self._tasks.get(task_id)

    def all(self) -> list[Task]:
        with self.lock:
            return list(self._tasks.values())

    def status(self, task: Task, now: float) -> str:
        elapsed = now - task.created_monotonic
        if elapsed >= self.config.generation_seconds:
            return task.outcome
        if elapsed >= self.config.processing_after_seconds:
            return "processing"
        return "created"

    def active_count(self) -> int:
        now = time.monotonic()
        with self.lock:
            return sum(1 for t in self._tasks.values() if self.status(t, now) not in TERMINAL)

    def create(self, params: dict[str, Any]) -> Task:
        """Create a (paid) task; random faults are decided here, once per task."""
        prompt: str = params["prompt"]
        cfg = self.config
        with self.lock:
            outcome, error = faults.generation_outcome(prompt, cfg, self.rng)
            cut_once = bool(cfg.cut_once_rate) and self.rng.random() < cfg.cut_once_rate
            truncate = bool(cfg.truncate_rate) and self.rng.random() < cfg.truncate_rate
            task = Task(
                id=uuid.uuid4().hex,
                prompt=prompt,
                params=params,
                created_at=now_iso(),
                created_monotonic=time.monotonic(),
                outcome=outcome,
                error=error,
                nsfw=MARKER_NSFW in prompt,
                output_count=2 if MARKER_TWO_OUTPUTS in prompt else 1,
                cut_once=cut_once or MARKER_CUT_ONCE in prompt,
                truncate=truncate or MARKER_TRUNCATE in prompt,
                not_mp4=MARKER_NOT_MP4 in prompt,
                poll_500_pending=MARKER_POLL_500_ONCE in prompt,
            )
            self._tasks[task.id] = task
            return task

    def output_urls(self, task: Task, base: str, now: float) -> list[str]:
        if self.status(task, now) != "completed":
            return []
        return [f"{base}/outputs/{task.id}/{n}.mp4" for n in range(task.output_count)]

    def data(self, task: Task, base: str, *, as_created: bool = False) -> dict[str, Any]:
        """The prediction object as the result endpoint reports it now."""
        now = time.monotonic()
        # A submit answer always reports "created", however long it was held back.
        status = "created" if as_created else self.status(task, now)
        outputs = self.output_urls(task, base, now) if status == "completed" else []
        terminal = status in TERMINAL
        elapsed_ms = int(self.config.generation_seconds * 1000) if terminal else 0
        return {
            "id": task.id,
            "model": MODEL,
            "outputs": outputs,
            "urls": {"get": f"{base}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [task.nsfw] * len(outputs),
            "status": status,
            "created_at": task.created_at,
            "error": task.error if terminal and status != "completed" else "",
            "executionTime": elapsed_ms,
            "timings": {"inference": elapsed_ms},
        }

    def snapshot(self, task: Task, base: str, now: float) -> dict[str, Any]:
        """Everything a test may want to know about a task, faults included."""
        status = self.status(task, now)
        return {
            "id": task.id,
            "prompt": task.prompt,
            "status": status,
            "outputs": self.output_urls(task, base, now),
            "created_at": task.created_at,
            "input": dict(task.params),
            "error": task.error if status in TERMINAL else "",
            "output_count": task.output_count,
            "cut_once": task.cut_once,
            "truncate": task.truncate,
            "downloads": sum(task.downloads.values()),
        }

    def blob(self, task_id: str, n: int) -> Blob:
        """Output `n` of a task (KeyError/IndexError when it does not exist)."""
        with self.lock:
            task = self._tasks[task_id]
            if not 0 <= n < task.output_count:
                raise IndexError(f"task {task_id} has no output {n}")
            blob = task.blobs.get(n)
            if blob is None:
                blob = make_blob(task.id, n, self.config.output_size, not_mp4=task.not_mp4)
                task.blobs[n] = blob
            return blob

    def start_download(self, task_id: str, n: int, *, head: bool) -> tuple[Blob, bool] | None:
        """The blob to serve and whether this download must be cut short."""
        with self.lock:
            task = self._tasks.get(task_id)
            if task is None or not 0 <= n < task.output_count:
                return None
            if self.status(task, time.monotonic()) != "completed":
                return None
            if head:
                return self.blob(task_id, n), False
            previous = task.downloads.get(n, 0)
            task.downloads[n] = previous + 1
            cut = task.truncate or (task.cut_once and previous == 0)
            return self.blob(task_id, n), cut

    def take_poll_500(self, task: Task) -> bool:
        """True once for a task marked to fail its first status read."""
        with self.lock:
            pending = task.poll_500_pending
            task.poll_500_pending = False
            return pending
