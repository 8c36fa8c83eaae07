"""Which fault a request or a task meets: prompt markers first, then seeded random rates."""

from __future__ import annotations

import random
import re
from typing import NamedTuple

from .config import (
    FAILURE_CODES,
    MARKER_429_ONCE,
    MARKER_500_SUBMIT,
    MARKER_CANCEL,
    MARKER_CODE_1001,
    MARKER_FAIL,
    MARKER_MODERATION,
    MARKER_TIMEOUT,
    MODERATION_CODE,
    SimulatorConfig,
)
from .wire import Reply, envelope, error

TOO_MANY_REQUESTS = "Too many requests, please retry later"
_FAIL_CODE = re.compile(r"\[sim:fail-(\d{4})\]")
#: WaveSpeed documents no code for a cancelled task; "task failed" is the nearest.
_CANCELLED_CODE = 1405
_TIMEOUT_CODE = 5004


class Outcome(NamedTuple):
    """How a task ends: its terminal status, error text and WaveSpeed error code (0: none)."""

    status: str
    error: str
    code: int


def _failed(code: int) -> Outcome:
    return Outcome("failed", FAILURE_CODES[code], code)


def generation_outcome(prompt: str, config: SimulatorConfig, rng: random.Random) -> Outcome:
    """The terminal status a new task will reach: prompt markers first, then random rates."""
    random_rates = config.fail_rate or config.cancel_rate or config.moderation_rate
    roll = rng.random() if random_rates else 1.0
    coded = _FAIL_CODE.search(prompt)
    if coded and int(coded.group(1)) in FAILURE_CODES:
        return _failed(int(coded.group(1)))
    if MARKER_MODERATION in prompt:
        return _failed(MODERATION_CODE)
    if MARKER_FAIL in prompt:
        return Outcome("failed", f"Simulated generation failure ({MARKER_FAIL})", 1405)
    if MARKER_CANCEL in prompt:
        return Outcome("cancelled", "Task was cancelled", _CANCELLED_CODE)
    if MARKER_TIMEOUT in prompt:
        return Outcome("timeout", "Task timed out before the generation finished", _TIMEOUT_CODE)
    if roll < config.fail_rate:
        return _failed(rng.choice(config.fail_codes))
    if roll < config.fail_rate + config.cancel_rate:
        return Outcome("cancelled", "Task was cancelled", _CANCELLED_CODE)
    if roll < config.fail_rate + config.cancel_rate + config.moderation_rate:
        return _failed(MODERATION_CODE)
    return Outcome("completed", "", 0)


class SubmitFaults:
    """Submit answers that create no task; remembers which prompts were already refused once."""

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._refused_once: set[str] = set()

    def rejection(self, prompt: str) -> Reply | None:
        """A refusal for this submit (marker or random fault), if any applies."""
        if MARKER_429_ONCE in prompt and prompt not in self._refused_once:
            self._refused_once.add(prompt)
            return error(429, TOO_MANY_REQUESTS)
        if MARKER_CODE_1001 in prompt:
            # The real API sometimes reports business errors inside an HTTP 200.
            return Reply(200, envelope(None, 1001, "Simulated business error (code 1001)"))
        if MARKER_500_SUBMIT in prompt:
            return error(500, "Internal server error")
        rate = self._config.submit_429_rate
        if rate and self._rng.random() < rate:
            return error(429, TOO_MANY_REQUESTS)
        return None
