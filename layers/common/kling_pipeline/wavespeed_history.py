"""WaveSpeed's account reads: the prediction history (to reconcile ambiguous submits) and the
balance. Separate from the client's paid and per-job calls, over the same connection pool."""

from __future__ import annotations

import json
from typing import Any

from .errors import PermanentError
from .wavespeed import WaveSpeedClient


class PredictionHistory:
    """The account's recent predictions and credit, read through a `WaveSpeedClient`."""

    def __init__(self, client: WaveSpeedClient) -> None:
        self._client = client

    def recent_predictions(
        self, *, model: str, created_after: str, created_before: str, max_pages: int = 5
    ) -> list[dict[str, Any]]:
        """The prediction history: the account's predictions of `model` created in the window
        (ISO 8601 bounds, inclusive), newest first, as WaveSpeed lists them.

        WaveSpeed documents the history both as `POST /api/v3/predictions` (a JSON body) and as
        a `GET` with query parameters; the POST is tried first, the GET when it is refused.
        """
        url = f"{self._client.base_url}/api/v3/predictions"
        items: list[dict[str, Any]] = []
        for page in range(1, max_pages + 1):
            query = {
                "page": page,
                "page_size": 100,
                "model": model,
                "created_after": created_after,
                "created_before": created_before,
            }
            data = self._page(url, query)
            listed = data.get("items")
            page_items = [i for i in listed or [] if isinstance(i, dict)]
            items.extend(page_items)
            total = data.get("total")
            if len(page_items) < 100 or (isinstance(total, int) and len(items) >= total):
                break
        return items

    def _page(self, url: str, query: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._client.request_json(
                "POST", url, "history", body=json.dumps(query).encode()
            )
        except PermanentError:
            return self._client.request_json("GET", url, "history", fields=query)

    def balance_usd(self) -> float | None:
        """The account's credit in USD (`GET /api/v3/balance`); None when it is not reported."""
        data = self._client.get_json(f"{self._client.base_url}/api/v3/balance", "balance")
        value = data.get("balance")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)
