"""In-memory fakes of the pacing ports: the shared start schedule, a clock, the re-send."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kling_pipeline.submit.pacing import Reservation


class FakeSchedule:
    """The jobs table's `pace#` items, with the same conditional updates, thread-safe."""

    def __init__(self) -> None:
        self.next_ms: int | None = None
        self.kept: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, now_ms: int, spacing_ms: int, horizon_ms: int) -> Reservation:
        with self._lock:
            if self.next_ms is None or self.next_ms <= now_ms:
                self.next_ms = now_ms + spacing_ms
                return Reservation(now_ms, taken=True)
            if self.next_ms > now_ms + horizon_ms:
                return Reservation(self.next_ms, taken=False)
            self.next_ms += spacing_ms
            return Reservation(self.next_ms - spacing_ms, taken=True)

    def give_back(self, at_ms: int, spacing_ms: int) -> bool:
        with self._lock:
            if self.next_ms != at_ms + spacing_ms:
                return False
            self.next_ms = at_ms
            return True

    def held(self, job_id: str) -> int | None:
        return self.kept.get(job_id)

    def hold(self, job_id: str, at_ms: int) -> None:
        self.kept[job_id] = at_ms

    def drop(self, job_id: str) -> None:
        self.kept.pop(job_id, None)


@dataclass
class FakeClock:
    """Time that moves only when slept through (or moved by the test)."""

    now: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class FakeResend:
    """The job queue's re-sends: (body, attributes, delay)."""

    sent: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)

    def resend(self, body: str, attributes: Mapping[str, Any], delay_s: int) -> None:
        self.sent.append((body, dict(attributes), delay_s))
