"""The account behind the API key: activation, balance, start-rate cap and outage windows."""

from __future__ import annotations

import threading
from collections import deque

from .config import FAILURE_CODES, SECONDS_PER_MINUTE, Outage, SimulatorConfig
from .wire import Reply, envelope, error

#: WaveSpeed's docs name the condition ("Insufficient credits", top up to continue) but not its
#: HTTP status; 402 Payment Required is the standard one.
INSUFFICIENT_STATUS = 402
INSUFFICIENT_MESSAGE = "Insufficient credits: top up your account at wavespeed.ai/top-up"
NOT_ACTIVATED_MESSAGE = (
    "Unauthorized: this API key is not activated; top up your account to activate it"
)
RATE_LIMITED_MESSAGE = "Too many requests: your account level's videos per minute is reached"


class Account:
    """Money and pacing of one account; every method takes the caller's monotonic `now`."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._limits = config.limits()
        self._lock = threading.Lock()
        self._starts: deque[float] = deque()
        self._spent_usd = 0.0
        self._outages: list[tuple[float, float, Outage]] = []

    # Outages

    def schedule_outages(self, started_at: float) -> None:
        """Place the configured outage windows relative to when the server started."""
        scale = self._config.time_scale
        with self._lock:
            for outage in self._config.outages:
                begin = started_at + outage.start_seconds * scale
                self._outages.append((begin, begin + outage.seconds * scale, outage))

    def start_outage(self, outage: Outage, now: float) -> None:
        """Begin an outage `outage.start_seconds` (scaled) from now."""
        outage.validate()
        scale = self._config.time_scale
        begin = now + outage.start_seconds * scale
        with self._lock:
            self._outages.append((begin, begin + outage.seconds * scale, outage))

    def outage_reply(self, route: str, now: float) -> Reply | None:
        """The answer of an API in an outage, if `route` ("submit"/"result") is in one now."""
        with self._lock:
            for begin, end, outage in self._outages:
                if begin <= now < end and outage.on in (route, "both"):
                    if outage.form == "code":
                        return Reply(200, envelope(None, 5003, FAILURE_CODES[5003]))
                    return error(503, "Service Unavailable")
        return None

    # Pacing

    def rate_limited(self, now: float) -> bool:
        """True when starting one more video now would pass the videos-per-minute cap."""
        if self._limits is None:
            return False
        window = SECONDS_PER_MINUTE * self._config.time_scale
        with self._lock:
            while self._starts and self._starts[0] <= now - window:
                self._starts.popleft()
            return len(self._starts) >= self._limits.videos_per_minute

    def record_start(self, now: float) -> None:
        with self._lock:
            self._starts.append(now)

    @property
    def max_concurrency(self) -> int | None:
        return None if self._limits is None else self._limits.max_concurrency

    # Money

    def balance_usd(self, refunded_usd: float) -> float:
        with self._lock:
            return round(self._config.balance_usd - self._spent_usd + refunded_usd, 6)

    def charge(self, amount_usd: float, refunded_usd: float) -> Reply | None:
        """Take `amount_usd`, or the insufficient-credits refusal when the balance is short."""
        with self._lock:
            available = self._config.balance_usd - self._spent_usd + refunded_usd
            if available + 1e-9 < amount_usd:
                return error(INSUFFICIENT_STATUS, INSUFFICIENT_MESSAGE)
            self._spent_usd += amount_usd
            return None

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return round(self._spent_usd, 6)
