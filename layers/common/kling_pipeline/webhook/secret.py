"""The account's webhook signing secret, read once from WaveSpeed's API and kept in memory only."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import urllib3
from urllib3.exceptions import HTTPError

from ..errors import TransientError
from ..redact import register_secret
from ..webhook_auth import SECRET_PREFIX

SECRET_PATH = "/api/v3/webhook/secret"
#: After a failed read, callers get the failure at once for this long instead of one more GET
#: each (an API without the endpoint would otherwise be asked on every submit and webhook).
RETRY_AFTER_S = 60.0


class WebhookSecretUnavailable(TransientError):
    """The secret could not be read: submits go without a webhook, webhooks are answered 503."""

    default_code = "webhook_secret_unavailable"


class WebhookSecret:
    """`GET /api/v3/webhook/secret` (`data.secret`, `whsec_…`) once per container.

    The value is registered with the redactor before anyone sees it, and it is never put in
    an exception message or a log line: errors name only the HTTP status or exception type.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        http: urllib3.PoolManager,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = base_url.rstrip("/") + SECRET_PATH
        self._api_key = api_key
        self._http = http
        self._timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._failed_at: float | None = None
        self._failure = ""

    def get(self) -> str:
        """The secret; WebhookSecretUnavailable when it cannot be read (retried after a while)."""
        with self._lock:
            if self._value is not None:
                return self._value
            if self._failed_at is not None and self._clock() - self._failed_at < RETRY_AFTER_S:
                raise WebhookSecretUnavailable(self._failure)
            try:
                self._value = self._read()
            except WebhookSecretUnavailable as exc:
                self._failed_at, self._failure = self._clock(), exc.message
                raise
            return self._value

    def _read(self) -> str:
        try:
            key = self._api_key()
            response = self._http.request(
                "GET",
                self._url,
                headers={"Authorization": f"Bearer {key}", "User-Agent": "kling-pipeline/1"},
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except HTTPError as exc:
            raise WebhookSecretUnavailable(
                f"could not read the webhook secret: {type(exc).__name__}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the API key read (Secrets Manager) failed
            raise WebhookSecretUnavailable(
                f"could not read the WaveSpeed API key for the webhook secret: {type(exc).__name__}"
            ) from None
        if response.status != 200:
            raise WebhookSecretUnavailable(
                f"the webhook secret endpoint answered HTTP {response.status}"
            )
        try:
            body = json.loads(response.data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        data = body.get("data") if isinstance(body, dict) and body.get("code") == 200 else None
        value = data.get("secret") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
            raise WebhookSecretUnavailable("the webhook secret endpoint sent no whsec_ secret")
        register_secret(value)
        return value
