"""Which fault a request or a task meets: prompt markers first, then seeded random rates."""

from __future__ import annotations

import random

from .config import (
    MARKER_429_ONCE,
    MARKER_500_SUBMIT,
    MARKER_CANCEL,
    MARKER_CODE_1001,
    MARKER_FAIL,
    MARKER_TIMEOUT,
    SimulatorConfig,
)
from .wire import Reply, envelope, error

TOO_MANY_REQUESTS = "Too many requests, please retry later"


def generation_outcome(prompt: str, config: SimulatorConfig, rng: random.Random) -> tuple[str, str]:
    """The terminal status a new task will reach, and its error text."""
    roll = rng.random() if config.fail_rate or config.cancel_rate else 1.0
    if MARKER_FAIL in prompt:
        return "failed", f"Simulated generation failure ({MARKER_FAIL})"
    if MARKER_CANCEL in prompt:
        return "cancelled", "Task was cancelled"
    if MARKER_TIMEOUT in prompt:
        return "timeout", "Task timed out before the generation finished"
    if roll < config.fail_rate:
        return "failed", "Simulated generation failure (random)"
    if roll < config.fail_rate + config.cancel_rate:
        return "cancelled", "Task was cancelled"
    return "completed", ""


class SubmitFaults:
    """Submit answers that create no task; remembers which prompts were already refused once."""

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._refused_once: set[str] = set()

    def rejection(self, prompt: str, active_tasks: int) -> Reply | None:
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
        cap = self._config.max_concurrency
        if cap is not None and active_tasks >= cap:
            return error(429, f"Concurrency limit reached ({cap} tasks in progress)")
        return None
