"""A webhook request from WaveSpeed, start to answer: verify -> dedupe -> find the job -> wake.

Every refusal is a 4xx with no effect; a 5xx only when this side failed (WaveSpeed may resend).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import TransientError
from ..observability import logger, metrics
from ..wavespeed import TERMINAL_FAILURES
from ..webhook_auth import MAX_BODY_BYTES, WebhookRefused, verify
from .store import UnknownPrediction

#: Statuses after which there is something for the workflow to read.
FINISHED = frozenset({"completed", *TERMINAL_FAILURES})
_PREDICTION_ID_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
)


class Secret(Protocol):
    def get(self) -> str: ...


class Store(Protocol):
    def expected(self, prediction_id: str) -> bool: ...

    def arrived(self, prediction_id: str) -> str | None: ...

    def seen(self, webhook_id: str) -> bool: ...

    def remember(self, webhook_id: str) -> None: ...


class Waker(Protocol):
    def wake(self, token: str) -> bool: ...


@dataclass(frozen=True)
class WebhookAnswer:
    """What the endpoint answers; `message` never echoes the request."""

    status: int
    message: str

    def to_function_url(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"message": self.message}),
        }


@dataclass(frozen=True)
class WebhookRequest:
    """The parts of an HTTP request the receiver reads."""

    method: str
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_function_url(cls, event: Mapping[str, Any]) -> WebhookRequest:
        """A Lambda function URL event (payload format 2.0: lower-case headers, body as text
        or base64)."""
        http = (event.get("requestContext") or {}).get("http") or {}
        raw = event.get("body") or ""
        # Bound the work before decoding: base64 is 4/3 of the bytes it carries.
        if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
            raw = raw[: MAX_BODY_BYTES * 4 // 3 + 8]
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                body = b""
        else:
            body = raw.encode("utf-8", "surrogateescape")
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        return cls(method=str(http.get("method") or "POST").upper(), headers=headers, body=body)


def prediction_of(body: bytes) -> tuple[str, str]:
    """(prediction id, status) of a webhook body: the bare prediction object, or the same in a
    `{code, message, data}` envelope. WebhookRefused(400) when it is not a prediction."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WebhookRefused("body is not JSON", status=400) from None
    if isinstance(document, dict) and isinstance(document.get("data"), dict):
        document = document["data"]
    if not isinstance(document, dict):
        raise WebhookRefused("body is not a prediction object", status=400)
    prediction_id, status = document.get("id"), document.get("status")
    if not (isinstance(prediction_id, str) and 0 < len(prediction_id) <= 128):
        raise WebhookRefused("body has no prediction id", status=400)
    if not set(prediction_id) <= _PREDICTION_ID_CHARS or not isinstance(status, str):
        raise WebhookRefused("body is not a prediction object", status=400)
    return prediction_id, status.lower()


class WebhookReceiver:
    """Turns one verified "prediction finished" webhook into one wake-up of its workflow."""

    def __init__(
        self,
        *,
        secret: Secret,
        store: Store,
        waker: Waker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._store = store
        self._waker = waker
        self._clock = clock

    def receive(self, request: WebhookRequest) -> WebhookAnswer:
        if request.method != "POST":
            return WebhookAnswer(405, "only POST")
        try:
            answer = self._receive(request)
        except WebhookRefused as exc:
            metrics.add_metric(name="WebhooksRefused", unit="Count", value=1)
            logger.info("webhook refused", extra={"status": exc.status, "reason": exc.message})
            return WebhookAnswer(exc.status, exc.message)
        except TransientError as exc:
            logger.warning("webhook not handled", extra={"reason": exc.message})
            return WebhookAnswer(503, "try again later")
        metrics.add_metric(name="WebhooksAccepted", unit="Count", value=1)
        return answer

    def _receive(self, request: WebhookRequest) -> WebhookAnswer:
        if len(request.body) > MAX_BODY_BYTES:
            raise WebhookRefused(f"body is over {MAX_BODY_BYTES} bytes", status=413)
        verified = verify(request.headers, request.body, self._secret.get(), clock=self._clock)
        prediction_id, status = prediction_of(verified.body)
        if self._store.seen(verified.webhook_id):
            return WebhookAnswer(200, "already handled")
        if status not in FINISHED:
            # Progress (or a stale resend): nothing to read yet. Still refuse a stranger.
            if not self._store.expected(prediction_id):
                raise WebhookRefused("no job waits for this prediction", status=404)
            return WebhookAnswer(200, "noted")
        try:
            token = self._store.arrived(prediction_id)
        except UnknownPrediction:
            raise WebhookRefused("no job waits for this prediction", status=404) from None
        woken = self._waker.wake(token) if token else False
        self._store.remember(verified.webhook_id)
        logger.info(
            "webhook accepted",
            extra={"prediction_id": prediction_id, "status": status, "woken": woken},
        )
        return WebhookAnswer(200, "ok")
