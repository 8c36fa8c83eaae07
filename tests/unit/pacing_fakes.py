"""In-memory fakes of the pacing ports: the shared start schedule, a clock, the re-send."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kling_pipeline.submit.pacing import Reservation


class FakeSchedule:
    """The jobs table's `pace#` items, with the same conditional updates, thread-safe.

    `legacy_next_ms` is what a deployment that counted in milliseconds left on the item:
    honoured as a floor until `next_us` is first written, which removes it.
    """

    def __init__(self) -> None:
        self.next_us: int | None = None
        self.legacy_next_ms: int | None = None
        self.kept: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, now_us: int, spacing_us: int, horizon_us: int) -> Reservation:
        with self._lock:
            at_us = now_us
            if self.next_us is not None:
                at_us = max(now_us, self.next_us)
            elif self.legacy_next_ms is not None and self.legacy_next_ms > now_us // 1000:
                at_us = self.legacy_next_ms * 1000
            return self._start_at(at_us, now_us, spacing_us, horizon_us)

    def _start_at(self, at_us: int, now_us: int, spacing_us: int, horizon_us: int) -> Reservation:
        if at_us > now_us + horizon_us:
            return Reservation(at_us, taken=False)
        self.next_us = at_us + spacing_us
        self.legacy_next_ms = None
        return Reservation(at_us, taken=True)

    def give_back(self, at_us: int, spacing_us: int) -> bool:
        with self._lock:
            if self.next_us != at_us + spacing_us:
                return False
            self.next_us = at_us
            return True

    def held(self, job_id: str) -> int | None:
        return self.kept.get(job_id)

    def hold(self, job_id: str, at_us: int) -> None:
        self.kept[job_id] = at_us

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
