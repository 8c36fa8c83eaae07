"""The paid tasks: their lifecycle over time, the faults each was dealt, and their outputs."""

from __future__ import annotations

import heapq
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
    PRICE_USD,
    SimulatorConfig,
)
from .wire import now_iso

TERMINAL = ("completed", "failed", "cancelled", "timeout")
#: WaveSpeed refunds generations that fail or time out.
REFUNDED = ("failed", "timeout")


@dataclass
class Task:
    """One paid generation, with every fault decided when it was created."""

    id: str
    prompt: str
    params: dict[str, Any]
    created_at: str
    created_monotonic: float
    # When a concurrency slot picked the task up; later than created when it queued.
    started_monotonic: float
    outcome: str
    error: str
    code: int
    price_usd: float
    nsfw: bool
    output_count: int
    cut_once: bool
    truncate: bool
    not_mp4: bool
    poll_500_pending: bool
    blobs: dict[int, Blob] = field(default_factory=dict)
    downloads: dict[int, int] = field(default_factory=dict)
    # Where the submit asked WaveSpeed to POST the result (None: no webhook).
    webhook_url: str | None = None


class TaskBook:
    """The task table; callers hold `lock` around anything that reads and then writes it."""

    def __init__(self, config: SimulatorConfig, lock: threading.RLock) -> None:
        self.config = config
        self.lock = lock
        self.rng = random.Random(config.seed)
        self._tasks: dict[str, Task] = {}
        # When each concurrency slot frees up: a task takes the earliest, FIFO like the service.
        self._slots: list[float] = []

    def get(self, task_id: str) -> Task | None:
        with self.lock:
            return self._tasks.get(task_id)

    def all(self) -> list[Task]:
        with self.lock:
            return list(self._tasks.values())

    def status(self, task: Task, now: float) -> str:
        """created (queued or being picked up) -> processing -> the task's outcome."""
        elapsed = now - task.started_monotonic
        if elapsed >= self.config.generation_seconds:
            return task.outcome
        if elapsed >= self.config.processing_after_seconds:
            return "processing"
        return "created"

    @staticmethod
    def price_usd(params: dict[str, Any]) -> float:
        return PRICE_USD[params["duration"]]

    def refunded_usd(self, now: float) -> float:
        """What WaveSpeed has given back so far for generations that failed or timed out."""
        with self.lock:
            return sum(
                t.price_usd
                for t in self._tasks.values()
                if t.outcome in REFUNDED and self.status(t, now) == t.outcome
            )

    def _start_time(self, now: float, max_concurrency: int | None) -> float:
        if max_concurrency is None:
            return now
        if len(self._slots) < max_concurrency:
            heapq.heappush(self._slots, now + self.config.generation_seconds)
            return now
        start = max(now, heapq.heappop(self._slots))
        heapq.heappush(self._slots, start + self.config.generation_seconds)
        return start

    def create(self, params: dict[str, Any], now: float, max_concurrency: int | None) -> Task:
        """Create a (paid) task; random faults are decided here, once per task. Over the
        concurrency cap it waits in `created` until a slot frees, as the service queues it."""
        prompt: str = params["prompt"]
        cfg = self.config
        with self.lock:
            outcome = faults.generation_outcome(prompt, cfg, self.rng)
            cut_once = bool(cfg.cut_once_rate) and self.rng.random() < cfg.cut_once_rate
            truncate = bool(cfg.truncate_rate) and self.rng.random() < cfg.truncate_rate
            task = Task(
                id=uuid.uuid4().hex,
                prompt=prompt,
                params=params,
                created_at=now_iso(),
                created_monotonic=now,
                started_monotonic=self._start_time(now, max_concurrency),
                outcome=outcome.status,
                error=outcome.error,
                code=outcome.code,
                price_usd=self.price_usd(params),
                nsfw=MARKER_NSFW in prompt,
                output_count=2 if MARKER_TWO_OUTPUTS in prompt else 1,
                cut_once=cut_once or MARKER_CUT_ONCE in prompt,
                truncate=truncate or MARKER_TRUNCATE in prompt,
                not_mp4=MARKER_NOT_MP4 in prompt,
                poll_500_pending=MARKER_POLL_500_ONCE in prompt,
            )
            self._tasks[task.id] = task
            return task

    def seed(self, task_id: str, outcome: str, now: float) -> Task:
        """A prediction that already ended with `outcome` (completed: one output), so a saved
        event naming `task_id` reads a real result. Nothing is charged for it."""
        failed = outcome != "completed"
        with self.lock:
            task = Task(
                id=task_id,
                prompt="seeded prediction",
                params={"prompt": "seeded prediction", "aspect_ratio": "16:9", "duration": 5},
                created_at=now_iso(),
                created_monotonic=now,
                started_monotonic=now - self.config.generation_seconds,
                outcome=outcome,
                error="seeded failure" if failed else "",
                code=1405 if failed else 0,
                price_usd=0.0,
                nsfw=False,
                output_count=0 if failed else 1,
                cut_once=False,
                truncate=False,
                not_mp4=False,
                poll_500_pending=False,
            )
            self._tasks[task_id] = task
            return task

    def output_base(self, api_base: str) -> str:
        host = self.config.output_host
        if host is None:
            return api_base
        return host.rstrip("/") if "://" in host else f"https://{host}"

    def output_urls(self, task: Task, api_base: str, now: float) -> list[str]:
        """Output URLs shaped like WaveSpeed's CDN ones (1-based numbering)."""
        if self.status(task, now) != "completed":
            return []
        base = self.output_base(api_base)
        if self.config.output_style == "output":
            names = [task.id if n == 0 else f"{task.id}-{n + 1}" for n in range(task.output_count)]
            return [f"{base}/output/{name}.mp4" for name in names]
        return [f"{base}/predictions/{task.id}/{n + 1}.mp4" for n in range(task.output_count)]

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
            "code": task.code if terminal else 0,
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
            "code": task.code if status in TERMINAL else 0,
            "price_usd": task.price_usd,
            "output_count": task.output_count,
            "cut_once": task.cut_once,
            "truncate": task.truncate,
            "downloads": sum(task.downloads.values()),
            "webhook_url": task.webhook_url,
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
