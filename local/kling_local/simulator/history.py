"""The prediction history endpoint: recent predictions, newest first, filtered and paged.

WaveSpeed documents it twice: as `POST /api/v3/predictions` with a JSON body (page and
page_size required), and as a plain `GET /api/v3/predictions`; both are served, GET taking the
same fields as query parameters (page defaulting to 1, page_size to 100).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .wire import Reply, error, ok

HISTORY_STATUSES = ("completed", "failed", "processing", "created", "cancelled", "timeout")
MAX_PAGE_SIZE = 100


def _timestamp(value: Any, name: str) -> tuple[datetime | None, str]:
    if value is None:
        return None, ""
    if not isinstance(value, str):
        return None, f"{name} must be an ISO 8601 date-time"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None, f"{name} must be an ISO 8601 date-time"
    if parsed.tzinfo is None:
        return None, f"{name} must carry a time zone (e.g. Z)"
    return parsed, ""


def _integer(value: Any, name: str, default: int | None) -> tuple[int | None, str]:
    if value is None:
        return default, "" if default is not None else f"{name} is required"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, f"{name} must be an integer"
    return value, ""


def query(params: dict[str, Any], predictions: list[dict[str, Any]], *, defaults: bool) -> Reply:
    """One page of `predictions` (prediction objects, any order) matching `params`."""
    page, problem = _integer(params.get("page"), "page", 1 if defaults else None)
    if page is None or page < 1:
        return error(400, problem or "page must be at least 1")
    size, problem = _integer(params.get("page_size"), "page_size", 100 if defaults else None)
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        return error(400, problem or f"page_size must be between 1 and {MAX_PAGE_SIZE}")
    after, problem = _timestamp(params.get("created_after"), "created_after")
    before, problem2 = _timestamp(params.get("created_before"), "created_before")
    if problem or problem2:
        return error(400, problem or problem2)
    model, status = params.get("model"), params.get("status")
    if status is not None and status not in HISTORY_STATUSES:
        return error(400, f"status must be one of {', '.join(HISTORY_STATUSES)}")
    chosen = []
    for item in predictions:
        created = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        if model is not None and item["model"] != model:
            continue
        if status is not None and item["status"] != status:
            continue
        # Both bounds are inclusive, as documented ("at or after", "at or before").
        if (after is not None and created < after) or (before is not None and created > before):
            continue
        chosen.append((created, item))
    chosen.sort(key=lambda pair: pair[0], reverse=True)
    items = [item for _, item in chosen[(page - 1) * size : page * size]]
    return ok({"page": page, "page_size": size, "total": len(chosen), "items": items})
