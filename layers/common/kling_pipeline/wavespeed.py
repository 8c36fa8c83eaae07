"""WaveSpeed REST client: a paid submit sent at most once, status reads retried with backoff."""

from __future__ import annotations

import json
import random
import re
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
from .redact import redact, register_secret
from .wavespeed_shapes import account_refusal, execution_ms, nsfw_flags, task_code

TERMINAL_FAILURES = {"failed", "cancelled", "timeout", "deleted"}
IN_PROGRESS = {"created", "pending", "processing", "queued", "starting"}
#: Statuses of a task still waiting for a concurrency slot: its generation has not started.
QUEUED = {"created", "pending", "queued"}
RETRYABLE_HTTP = {429, 500, 502, 503, 504}
#: Envelope codes of WaveSpeed's own server errors (internal, unavailable, timed out): retried.
SERVER_ERROR_CODES = {5000, 5003, 5004}
#: What a prediction id may look like before it goes into a URL path, an S3 tag or a name.
PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
#: API text quoted in an error: enough to diagnose, bounded for notifications and logs.
MAX_API_TEXT = 300


@dataclass(frozen=True)
class Prediction:
    """The state of one WaveSpeed prediction, as read from its result endpoint."""

    id: str
    status: str
    outputs: list[str] = field(default_factory=list)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error: str = ""
    execution_time_ms: float = 0.0
    #: WaveSpeed's error code of a failed task (`data.code`: 1200 moderation, ...); 0: none.
    code: int = 0
    #: When WaveSpeed created the task (ISO 8601), as it reports it; outputs live 7 days.
    created_at: str = ""


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
    return bool(_json_object(raw))


def _json_object(raw: bytes) -> dict[str, Any]:
    """The answer's JSON object, or {} for anything else (a list, null, not UTF-8, a bomb)."""
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _api_text(body: dict[str, Any], raw: bytes) -> str:
    """The API's own words for an error: untrusted, so bounded and with secrets masked."""
    message = body.get("message")
    text = (
        message
        if isinstance(message, str) and message
        else raw[:MAX_API_TEXT].decode("utf-8", "replace")
    )
    return redact(text[:MAX_API_TEXT])


class ThrottledSubmit(TransientError):
    """The submit was provably not accepted (429 or connection refused): safe to send again."""


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def envelope_data(status: int, raw: bytes, what: str) -> dict[str, Any]:
    """Returns `data` of a successful envelope; anything else becomes a typed error."""
    body = _json_object(raw)
    message = _api_text(body, raw)
    if status in RETRYABLE_HTTP:
        raise TransientError(f"{what}: HTTP {status}: {message}", code=f"http_{status}")
    refusal = account_refusal(status, message)
    if refusal is not None:
        raise PermanentError(f"{what}: HTTP {status}: {message}", code=refusal)
    if status != 200:
        raise PermanentError(f"{what}: HTTP {status}: {message}", code="api_rejected")
    code = body.get("code")
    if code in SERVER_ERROR_CODES:
        # An outage can answer HTTP 200 with the server error in the envelope.
        raise TransientError(f"{what}: API code {code}: {message}", code=f"api_{code}")
    if code != 200:
        # A 200 answer can still carry an error code in the envelope (1xxx: bad request).
        raise PermanentError(f"{what}: API code {code}: {message}", code="api_rejected")
    data = body.get("data")
    if not isinstance(data, dict):
        raise PermanentError(f"{what}: answer has no data object", code="api_rejected")
    return data


def optimizer_text(data: dict[str, Any]) -> str:
    """The improved prompt of a prompt-optimizer answer, or a PermanentError saying why not."""
    outputs = data.get("outputs")
    status = redact(str(data.get("status"))[:40])
    if data.get("status") != "completed" or not isinstance(outputs, list) or not outputs:
        raise PermanentError(f"prompt optimizer: no result (status {status})")
    if not isinstance(outputs[0], str):
        raise PermanentError(
            f"prompt optimizer: its result is a {type(outputs[0]).__name__}, not text"
        )
    return outputs[0].strip()


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
        self.base_url = base_url.rstrip("/")
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
        key = self._api_key()
        register_secret(key)  # masked in anything an API answer echoes back
        return {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "User-Agent": "kling-pipeline/1",
        }

    def submit_generation(self, payload: dict[str, Any], *, webhook_url: str | None = None) -> str:
        """POSTs one paid task and returns its prediction id; with `webhook_url`, WaveSpeed
        calls it when the task ends (its `webhook` query parameter).

        The POST is retried only when the API provably did not accept it (connection refused,
        429); a timeout or dropped connection after sending may have created a paid task, so it
        raises `SubmitOutcomeUnknown` and is never re-sent, like the official SDK.
        """
        url = f"{self.base_url}/api/v3/{MODEL_ID}"
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
            if 200 <= response.status < 300 and not _is_json_object(response.data):
                raise SubmitOutcomeUnknown(
                    f"WaveSpeed accepted the submit request (HTTP {response.status}) but its "
                    "answer could not be read; a task may have been created"
                )
            # Any success is read as one: a task may exist, so it must not read as a refusal.
            response_status = 200 if 200 <= response.status < 300 else response.status
            if response.status >= 500:
                raise SubmitOutcomeUnknown(
                    f"WaveSpeed answered HTTP {response.status} to the submit request; "
                    "a task may or may not have been created"
                )
            data = envelope_data(response_status, response.data, "submit")
            prediction_id = data.get("id")
            if not isinstance(prediction_id, str) or not PREDICTION_ID.match(prediction_id):
                # Accepted, so a task may exist: never resubmit, never put this in a URL.
                raise SubmitOutcomeUnknown(
                    "the submit answer carried no usable prediction id "
                    f"({redact(repr(prediction_id)[:80])})"
                )
            return prediction_id
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, url: str, what: str) -> dict[str, Any]:
        last: TransientError | None = None
        for attempt in range(self._retry.attempts):
            retry_after: float | None = None
            try:
                response = self._http.request(
                    "GET", url, headers=self._headers(), timeout=self._timeout, retries=False
                )
                retry_after = _retry_after(response.headers)
                return envelope_data(response.status, response.data, what)
            except TransientError as exc:
                last = exc
            except HTTPError as exc:
                last = TransientError(f"{what}: {type(exc).__name__}", code="api_unreachable")
            if attempt + 1 < self._retry.attempts:
                self._sleep(self._retry.delay(attempt, retry_after, self._rng))
        assert last is not None
        raise last

    def read_prediction(self, prediction_id: str) -> Prediction:
        """Reads a prediction's status; transient failures retry, then raise TransientError.

        Fields a paid job does not need to succeed are read leniently (see wavespeed_shapes):
        an odd `executionTime` or `has_nsfw_contents` never fails the job.
        """
        data = self.get_json(f"{self.base_url}/api/v3/predictions/{prediction_id}/result", "status")
        listed = data.get("outputs")
        outputs = [u for u in listed if isinstance(u, str)] if isinstance(listed, list) else []
        return Prediction(
            id=str(data.get("id") or prediction_id),
            status=str(data.get("status") or "unknown").lower(),
            outputs=outputs,
            has_nsfw_contents=nsfw_flags(data.get("has_nsfw_contents"), len(outputs)),
            error=str(data.get("error") or ""),
            execution_time_ms=execution_ms(data.get("executionTime")),
            code=task_code(data.get("code")),
            created_at=str(data.get("created_at") or ""),
        )

    def request_json(
        self,
        method: str,
        url: str,
        what: str,
        *,
        body: bytes | None = None,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One read-only request (no retries): the envelope's data, or a typed error."""
        try:
            response = self._http.request(
                method,
                url,
                body=body,
                fields=fields,
                headers=self._headers(),
                timeout=self._timeout,
                retries=False,
            )
        except HTTPError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}", code="api_unreachable") from None
        return envelope_data(response.status, response.data, what)

    def enhance_prompt(self, text: str, style: str = "default") -> str:
        """Runs WaveSpeed's prompt optimizer in sync mode and returns the improved prompt."""
        url = f"{self.base_url}/api/v3/{PROMPT_OPTIMIZER_MODEL}"
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
        return optimizer_text(envelope_data(response.status, response.data, "prompt optimizer"))
