"""The account's start-rate budget, shared by every submit function: when a paid POST may go.

WaveSpeed caps the videos an account starts per minute (over it: HTTP 429, nothing created).
Every concurrent submit function takes its turn from ONE schedule kept in the jobs table, so
the account stays under its cap whatever the Lambda concurrency.

Why evenly spaced starts (a zero-burst GCRA: one `next start` time, each start pushes it by
`spacing = (window + margin) / videos per minute`) and not the alternatives:

- Fixed per-minute windows with a conditional ADD allow the cap at the end of one window and
  again at the start of the next: 2x the cap within 60 s, which a sliding count (how the
  simulator, and the strictest reading of WaveSpeed's docs, count) answers with 429s.
  Making that safe means halving the per-window cap: half the tier.
- A token bucket with optimistic read-modify-write retries under contention: at 50 starts/s
  from dozens of functions most writes would lose and go round again.
- Spacing needs one atomic `SET next = next + spacing` per start (DynamoDB serialises writes
  to one item, no read-modify-write, no lost races, far below an item's 1,000 writes/s even at
  Ultra's 83 starts/s), and never exceeds the cap in ANY 60 s window: N + 1 starts spaced
  `(60 + margin) / N` apart span more than 60 s. The margin absorbs a start that goes out up
  to `margin / 2` late and POST latencies that differ by up to `margin / 2`; it costs
  margin / (60 + margin) of the tier (2 s: 3 %). No burst is lost that matters: a backlog
  runs at the full rate after its first start.

A job whose turn is more than `max_wait_s` away does not hold a Lambda: its turn is reserved
(kept in the table under the job id) and the job raises `PacingWait`, which the submit service
answers by re-sending the identical message with a delay that brings it back just before its
turn — pacing never spends a receive of the message, so it never leads to the DLQ. A job that
comes back too late for its turn (more than `margin / 2`) takes a new one; the missed slot is
simply unused, which only slows the account down.

The schedule counts in whole microseconds, in integers: the spacing is `(window + margin) / rate`
rounded UP to a microsecond, so it is never shorter than the cap allows, and the rounding costs
under 0.02 % of any rate up to 10,000 a minute (whole milliseconds cost Ultra's 12.4 ms spacing
5 %). Integer addition also means a day of starts lands exactly where it should: no float drift.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import TransientError

#: SQS takes at most 15 minutes of DelaySeconds: no turn is reserved further ahead than that.
MAX_DELAY_S = 900
#: The schedule's unit: every time in it is an integer number of microseconds.
US_PER_S = 1_000_000


class PacingWait(TransientError):
    """The job's turn to start is later: re-send it after `delay_s` (not a failed attempt)."""

    def __init__(self, message: str, *, delay_s: int) -> None:
        super().__init__(message, code="pacing")
        self.delay_s = max(1, min(MAX_DELAY_S, delay_s))


@dataclass(frozen=True)
class StartRate:
    """The account's videos-per-minute cap and how the shared schedule honours it."""

    videos_per_minute: int
    #: WaveSpeed's rate window (a minute; shorter only against a time-scaled simulator).
    window_s: float = 60.0
    #: Slack added to every window, for late starts and uneven POST latencies (see module doc).
    margin_s: float = 2.0
    #: The longest a submit function sleeps for a turn instead of re-queueing the job.
    max_wait_s: float = 3.0

    @property
    def period_us(self) -> int:
        """The window plus its margin, in microseconds: what `videos_per_minute` starts span."""
        return round(self.window_s * US_PER_S) + round(self.margin_s * US_PER_S)

    @property
    def spacing_us(self) -> int:
        """Microseconds between two starts, rounded up so the cap is never passed."""
        return -(-self.period_us // self.videos_per_minute)

    @property
    def grace_us(self) -> int:
        """How late a reserved turn may still be used."""
        return round(self.margin_s * US_PER_S) // 2


@dataclass(frozen=True)
class Turn:
    """A start slot taken from the schedule: its time, in epoch microseconds."""

    at_us: int


@dataclass(frozen=True)
class Reservation:
    """What the schedule answered: a slot (`taken`) or, when full, the first free time."""

    at_us: int
    taken: bool


class StartSchedule(Protocol):
    """The shared schedule (`pacing_table.TableStartSchedule` in DynamoDB)."""

    def reserve(self, now_us: int, spacing_us: int, horizon_us: int) -> Reservation:
        """Takes the next slot, unless it lies beyond `now_us + horizon_us`."""

    def give_back(self, at_us: int, spacing_us: int) -> bool:
        """Returns the slot at `at_us` when no later slot was taken since; True if returned."""

    def held(self, job_id: str) -> int | None:
        """The slot reserved for `job_id` while it waited, if any."""

    def hold(self, job_id: str, at_us: int) -> None:
        """Keeps the slot at `at_us` for `job_id` until it comes back."""

    def drop(self, job_id: str) -> None:
        """Forgets the slot kept for `job_id`."""


class Pacer(Protocol):
    """What admission asks before each paid POST (`StartPacer`, or `UNPACED`)."""

    def wait_turn(self, job_id: str) -> Turn | None:
        """Returns once the job may start now; raises PacingWait when it must come back later."""

    def give_back(self, turn: Turn | None) -> None:
        """The POST provably created nothing: the slot may serve another job."""


class Unpaced:
    """No start-rate cap configured: every job starts at once."""

    def wait_turn(self, job_id: str) -> Turn | None:
        return None

    def give_back(self, turn: Turn | None) -> None:
        return None


UNPACED = Unpaced()


class StartPacer:
    """Takes turns from the shared schedule; sleeps for a near turn, re-queues for a far one."""

    def __init__(
        self,
        rate: StartRate,
        schedule: StartSchedule,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = rate
        self._schedule = schedule
        self._clock = clock
        self._sleep = sleep

    def wait_turn(self, job_id: str) -> Turn | None:
        now_us = self._now_us()
        at_us = self._kept_turn(job_id, now_us)
        if at_us is None:
            reservation = self._schedule.reserve(
                now_us, self._rate.spacing_us, MAX_DELAY_S * US_PER_S
            )
            if not reservation.taken:
                # Over 15 minutes of starts are already promised: look again once the
                # schedule has run down to its horizon, never sooner than 5 minutes, so a long
                # backlog costs a few re-sends per job rather than one per slot.
                ahead_s = (reservation.at_us - now_us) / US_PER_S
                raise PacingWait(
                    f"the account's start schedule is full for {ahead_s:.0f} s",
                    delay_s=max(math.ceil(ahead_s - MAX_DELAY_S), MAX_DELAY_S // 3),
                )
            at_us = reservation.at_us
            if (at_us - now_us) / US_PER_S > self._rate.max_wait_s:
                self._schedule.hold(job_id, at_us)
        lead_s = (at_us - now_us) / US_PER_S
        if lead_s > self._rate.max_wait_s:
            raise PacingWait(
                f"this job's start is reserved {lead_s:.1f} s from now",
                delay_s=math.ceil(lead_s - self._rate.max_wait_s),
            )
        if lead_s > 0:
            self._sleep(lead_s)
        return Turn(at_us)

    def give_back(self, turn: Turn | None) -> None:
        if turn is not None:
            self._schedule.give_back(turn.at_us, self._rate.spacing_us)

    def _kept_turn(self, job_id: str, now_us: int) -> int | None:
        """The turn this job reserved earlier, while it is still usable."""
        at_us = self._schedule.held(job_id)
        if at_us is None:
            return None
        if (at_us - now_us) / US_PER_S > self._rate.max_wait_s:
            return at_us  # back early (SQS delays are whole seconds): wait again, keep it
        self._schedule.drop(job_id)
        return at_us if now_us <= at_us + self._rate.grace_us else None

    def _now_us(self) -> int:
        return int(self._clock() * US_PER_S)


class Resend(Protocol):
    """Puts a received message back on the job queue unchanged (`pacing_table.SqsResend`)."""

    def resend(self, body: str, attributes: Mapping[str, Any], delay_s: int) -> None:
        """TransientError when it could not be sent (the original is then kept)."""


def pacing_delay(exc: TransientError, window_s: float, rng: random.Random) -> int | None:
    """Seconds until a job held back by pacing should come back; None for a real failure.

    A 429 that still happens (another client on the same account spends its start rate) is
    pacing too: the account's count frees up within one rate window, so the job comes back
    at a random point of the next one, spread so that a burst of them does not return at once.
    """
    if isinstance(exc, PacingWait):
        return exc.delay_s
    if exc.code == "rate_limited":
        return max(1, min(MAX_DELAY_S, round(rng.uniform(1, max(1.0, window_s)))))
    return None
