"""WaveSpeed's prompt optimizer: a cheap model that rewrites a prompt, answered at once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from .config import MARKER_OPTIMIZER_FAIL, OPTIMIZER_MODEL
from .wire import Reply, error, json_object, now_iso, ok

OPTIMIZER_SENTENCES = {
    "video": (
        "Cinematic composition with smooth, steady camera motion, natural lighting and rich,"
        " temporally coherent detail throughout the shot."
    ),
    "image": "Sharp focus, balanced composition, natural lighting and rich fine detail.",
}


class PromptOptimizer:
    """Optimizer predictions by id, so their result URL can be polled like any other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[str, dict[str, Any]] = {}

    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._results.get(task_id)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._results.values())

    def optimize(self, raw: bytes, base: str) -> Reply:
        body, message = json_object(raw)
        if body is None:
            return error(400, message)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return error(400, "text is required")
        mode = body.get("mode", "image")
        if mode not in OPTIMIZER_SENTENCES:
            return error(400, "mode must be one of video, image")
        style = body.get("style")
        if style is not None and not isinstance(style, str):
            return error(400, "style must be a string")
        if MARKER_OPTIMIZER_FAIL in text:
            return error(500, "Internal server error")
        # The original text (markers included) is kept so simulator markers survive
        # optimisation and still reach the video submission.
        enhanced = f"{text.strip()} {OPTIMIZER_SENTENCES[mode]}"
        if style and style != "default":
            enhanced += f" Rendered in a {style} style."
        task_id = uuid.uuid4().hex
        data = {
            "id": task_id,
            "model": OPTIMIZER_MODEL,
            "outputs": [enhanced],
            "urls": {"get": f"{base}/api/v3/predictions/{task_id}/result"},
            "has_nsfw_contents": [False],
            "status": "completed",
            "created_at": now_iso(),
            "error": "",
            "executionTime": 5,
            "timings": {"inference": 5},
        }
        with self._lock:
            self._results[task_id] = data
        if body.get("enable_sync_mode") is True:
            return ok(data)
        return ok(dict(data, status="created", outputs=[], has_nsfw_contents=[]))
