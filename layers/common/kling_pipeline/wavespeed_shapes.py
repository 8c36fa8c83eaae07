"""Lenient readers for the fields of WaveSpeed answers whose shape varies between pages.

The rule: a field a paid job does not need in order to succeed never fails it. A plausible
shape is read for what it says; a shape nobody documents degrades to the safe side — an
unreadable run time is simply unknown, an unreadable NSFW flag counts as flagged (the video
is still stored and notified, only in the quarantine prefix, never lost and never shown as
clean when it might not be).
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", re.IGNORECASE)
_FALSE_WORDS = {"false", "0", "no", ""}

#: Job error codes of an account the API refuses to serve; nothing is charged for them.
API_KEY_NOT_ACTIVATED = "api_key_not_activated"
INSUFFICIENT_BALANCE = "insufficient_balance"


def execution_ms(value: Any) -> float:
    """`executionTime` in milliseconds: a number, or text ("12ms", "12", "1.5s"); 0: unknown."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return max(0.0, float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number = float(match.group(1))
            return number * 1000 if (match.group(2) or "").lower() == "s" else number
    return 0.0


def _flag(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        # "true", or a word nobody documents: flagged, to be safe.
        return value.strip().lower() not in _FALSE_WORDS
    return True


def nsfw_flags(value: Any, outputs: int) -> list[bool]:
    """One flag per output from `has_nsfw_contents`: a list (of booleans, "true"/"false",
    numbers), one scalar for every output, or null/absent (nothing flagged)."""
    if value is None:
        return [False] * outputs
    if isinstance(value, list):
        flags = [_flag(item) for item in value[:outputs]]
        # A list shorter than the outputs (an empty one included) says nothing of the rest:
        # they share the listed verdict, clean when nothing listed is flagged.
        return flags + [any(flags)] * (outputs - len(flags))
    return [_flag(value)] * outputs


def task_code(value: Any) -> int:
    """`data.code` of a prediction as a number (0 when absent or unreadable)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def account_refusal(status: int, message: str) -> str | None:
    """The job error code of an answer that refuses the account itself, if this is one.

    401 with a key WaveSpeed says is not activated (keys activate with the first top-up), and
    "insufficient credits" (documented by name, not by HTTP status: 402, or a 4xx saying so).
    """
    text = message.lower()
    if status == 401 and "activ" in text:
        return API_KEY_NOT_ACTIVATED
    if status == 402 or (400 <= status < 500 and ("insufficient" in text or "balance" in text)):
        return INSUFFICIENT_BALANCE
    return None
