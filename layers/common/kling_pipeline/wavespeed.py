"""WaveSpeed REST client: a paid submit sent at most once, status reads retried with backoff."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
)

from . import MODEL_ID, PROMPT_OPTIMIZER_MODEL
from .errors import PermanentError, SubmitOutcomeUnknown, TransientError

TERMINAL_FAILURES = {"failed", "cancelled", "timeout", "deleted"}
IN_PROGRESS = {"created", "pending", "processing", "queued", "starting"}
RETRYABLE_HTTP = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Prediction:
    """The state of one WaveSpeed prediction, as read from its result endpoint."""

    id: str
    status: str
    outputs: list[str] = field(default_factory=list)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error: str = ""
    execution_time_ms: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; Retry-After wins when the API sends it."""

    attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap_s)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2**attempt))


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw or b""), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


class ThrottledSubmit(TransientError):
    """The submit was provably not accepted (429 or connection refused): safe to send again."""


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


class WaveSpeedClient:
    """Speaks api.wavespeed.ai's `{code, message, data}` protocol over a shared urllib3 pool."""

    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        http: urllib3.PoolManager | None = None,
        timeout_s: float = 10.0,
        submit_timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._http = http or urllib3.PoolManager(maxsize=16)
        self._timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)
        self._submit_timeout = urllib3.Timeout(
            connect=min(5.0, submit_timeout_s), read=submit_timeout_s
        )
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def check_credentials(self) -> None:
        """Reads the API key now, so a Secrets Manager outage fails before anything is claimed."""
        try:
            key = self._api_key()
        except Exception as exc:  # noqa: BLE001 - any failure to read the key is retryable
            raise TransientError(
                f"could not read the WaveSpeed API key: {type(exc).__name__}", code="api_key"
            ) from None
        if not key or key.startswith("REPLACE_WITH"):
            raise PermanentError(
                "the WaveSpeed API key is not set: put it in the stack's ApiKeySecret "
                "(aws secretsmanager put-secret-value --secret-id <name> --secret-string <key>)",
                code="api_key_missing",
            )

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key()}",
            "Content-Type": "application/json",
            "User-Agent": "kling-pipeline/1",
        }

    @staticmethod
    def _envelope(status: int, raw: bytes, what: str) -> dict[str, Any]:
        """Returns `data` of a successful envelope; anything else becomes a typed error."""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        message = str(body.get("message") or raw[:200].decode("utf-8", "replace"))
        if status in RETRYABLE_HTTP:
            raise TransientError(f"{what}: HTTP {status}: {message}", code=f"http_{status}")
        if status != 200:
            raise PermanentError(f"{what}: HTTP {status}: {message}", code="api_rejected")
        code = body.get("code")
        if code != 200:
            # A 200 answer can still carry an error code in the envelope (1xxx: bad request).
            raise PermanentError(f"{what}: API code {code}: {message}", code="api_rejected")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PermanentError(f"{what}: answer has no data object", code="api_rejected")
        return data

    def submit_generation(self, payload: dict[str, Any], *, webhook_url: str | None = None) -> str:
        """POSTs one paid task and returns its prediction id; with `webhook_url`, WaveSpeed
        calls it when the task ends (its `webhook` query parameter).

        The POST is retried only when the API provably did not accept it (connection refused,
        429); a timeout or dropped connection after sending may have created a paid task, so it
        raises `SubmitOutcomeUnknown` and is never re-sent, like the official SDK.
        """
        url = f"{self._base}/api/v3/{MODEL_ID}"
        if webhook_url:
            url += "?" + urlencode({"webhook": webhook_url})
        body = json.dumps(payload).encode()
        for attempt in range(self._retry.attempts):
            try:
                response = self._http.request(
                    "POST",
                    url,
                    body=body,
                    headers=self._headers(),
                    timeout=self._submit_timeout,
                    retries=False,
                    redirect=False,
                )
            except (NewConnectionError, ConnectTimeoutError) as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise ThrottledSubmit(
                        f"submit: could not connect to WaveSpeed: {exc}", code="api_unreachable"
                    ) from None
                self._sleep(self._retry.delay(attempt, None, self._rng))
                continue
            except HTTPError as exc:
                raise SubmitOutcomeUnknown(
                    f"the submit request was sent but no answer came back ({type(exc).__name__})"
                ) from None
            if response.status == 429:
                if attempt + 1 >= self._retry.attempts:
                    raise ThrottledSubmit("submit: WaveSpeed answered 429", code="rate_limited")
                self._sleep(self._retry.delay(attempt, _retry_after(response.headers), self._rng))
                continue
            if response.status == 200 and not _is_json_object(response.data):
                raise SubmitOutcomeUnknown(
                    "WaveSpeed accepted the submit request (HTTP 200) but its answer could not "
                    "be read; a task may have been created"
                )
            if response.status >= 500:
                raise SubmitOutcomeUnknown(
                    f"WaveSpeed answered HTTP {response.status} to the submit request; "
                    "a task may or may not have been created"
                )
            data = self._envelope(response.status, response.data, "submit")
            prediction_id = data.get("id")
            if not isinstance(prediction_id, str) or not prediction_id:
                raise SubmitOutcomeUnknown("the submit answer carried no prediction id")
            return prediction_id
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, url: str, what: str) -> dict[str, Any]:
        last: TransientError | None = None
        for attempt in range(self._retry.attempts):
            retry_after: float | None = None
            try:
                response = self._http.request(
                    "GET", url, headers=self._headers(), timeout=self._timeout, retries=False
                )
                retry_after = _retry_after(response.headers)
                return self._envelope(response.status, response.data, what)
            except TransientError as exc:
                last = exc
            except HTTPError as exc:
                last = TransientError(f"{what}: {type(exc).__name__}", code="api_unreachable")
            if attempt + 1 < self._retry.attempts:
                self._sleep(self._retry.delay(attempt, retry_after, self._rng))
        assert last is not None
        raise last

    def read_prediction(self, prediction_id: str) -> Prediction:
        """Reads a prediction's status; transient failures retry, then raise TransientError."""
        data = self._get(f"{self._base}/api/v3/predictions/{prediction_id}/result", "status")
        outputs = [str(url) for url in data.get("outputs") or [] if isinstance(url, str)]
        flags = [bool(flag) for flag in data.get("has_nsfw_contents") or []]
        return Prediction(
            id=str(data.get("id") or prediction_id),
            status=str(data.get("status") or "unknown").lower(),
            outputs=outputs,
            has_nsfw_contents=flags,
            error=str(data.get("error") or ""),
            execution_time_ms=float(data.get("executionTime") or 0),
        )

    def check_prediction(self, prediction_id: str) -> Prediction:
        """The old name of `read_prediction`, kept while bench/schedule.py overrides it."""
        return self.read_prediction(prediction_id)

    def enhance_prompt(self, text: str, style: str = "default") -> str:
        """Runs WaveSpeed's prompt optimizer in sync mode and returns the improved prompt."""
        url = f"{self._base}/api/v3/{PROMPT_OPTIMIZER_MODEL}"
        body = json.dumps(
            {"text": text, "mode": "video", "style": style, "enable_sync_mode": True}
        ).encode()
        try:
            response = self._http.request(
                "POST",
                url,
                body=body,
                headers=self._headers(),
                timeout=self._submit_timeout,
                retries=False,
            )
        except HTTPError as exc:
            raise TransientError(f"prompt optimizer: {type(exc).__name__}") from None
        data = self._envelope(response.status, response.data, "prompt optimizer")
        outputs = data.get("outputs") or []
        if data.get("status") != "completed" or not outputs or not isinstance(outputs[0], str):
            raise PermanentError(f"prompt optimizer: no result (status {data.get('status')})")
        return outputs[0].strip()
