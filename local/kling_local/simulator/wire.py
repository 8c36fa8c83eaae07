"""What travels over the wire: the {code, message, data} envelope, replies and input checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .config import ASPECT_RATIOS, DURATIONS

if TYPE_CHECKING:
    from .tasks import Task


@dataclass
class Reply:
    """What the HTTP layer should do with a request: answer, answer late, or hang up."""

    status: int
    payload: dict[str, Any] | None
    delay_seconds: float = 0.0
    drop: bool = False
    task: Task | None = None
    sync: bool = False


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def error(code: int, message: str) -> Reply:
    return Reply(code, envelope(None, code, message))


def ok(data: Any) -> Reply:
    return Reply(200, envelope(data))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_object(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        body = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "request body must be valid JSON"
    if not isinstance(body, dict):
        return None, "request body must be a JSON object"
    return body, ""


def validate_t2v(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Normalised input, or (None, message) mirroring the real API's 400 answers."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None, "prompt is required"
    negative = body.get("negative_prompt", "")
    if negative is None:
        negative = ""
    if not isinstance(negative, str):
        return None, "negative_prompt must be a string"
    aspect_ratio = body.get("aspect_ratio", "16:9")
    if aspect_ratio not in ASPECT_RATIOS:
        return None, f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}"
    duration = body.get("duration", 5)
    # bool is an int subclass; True must not pass as a duration.
    if isinstance(duration, str) and duration.strip().isdigit():
        duration = int(duration.strip())
    if isinstance(duration, bool) or duration not in DURATIONS:
        return None, "duration must be 5 or 10"
    guidance = body.get("guidance_scale", 0.5)
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, int | float)
        or not 0.0 <= guidance <= 1.0
    ):
        return None, "guidance_scale must be a number between 0 and 1"
    return {
        "prompt": prompt,
        "negative_prompt": negative,
        "aspect_ratio": aspect_ratio,
        "duration": int(duration),
        "guidance_scale": float(guidance),
    }, ""
