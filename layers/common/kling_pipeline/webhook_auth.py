"""Verifies WaveSpeed's webhook signatures (their own v3 scheme, not Standard Webhooks).

WaveSpeed signs `"{webhook-id}.{webhook-timestamp}.{raw body}"` with HMAC-SHA256 keyed by the
account's webhook secret minus its `whsec_` prefix, used as text (not base64-decoded), and sends
`webhook-signature: v3,<hex>`. Standard Webhooks libraries (v1, base64 key) cannot verify these.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import PermanentError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v3"
TOLERANCE_S = 300
MAX_BODY_BYTES = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
_HEX = re.compile(r"^[0-9a-f]{64}\Z")


class WebhookRefused(PermanentError):
    """The request is not an authentic, fresh WaveSpeed webhook: answered 4xx, no effect."""

    default_code = "webhook_refused"

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class VerifiedWebhook:
    """A webhook whose signature and timestamp checked out."""

    webhook_id: str
    timestamp: int
    body: bytes


def signing_key(secret: str) -> bytes:
    """The HMAC key: the secret without its `whsec_` prefix, as UTF-8 text."""
    return secret.removeprefix(SECRET_PREFIX).encode()


def signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` header value WaveSpeed sends for this request."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION},{digest}"


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    clock: Callable[[], float] = time.time,
    tolerance_s: int = TOLERANCE_S,
) -> VerifiedWebhook:
    """Checks headers, size, timestamp and signature; raises WebhookRefused on any doubt.

    `headers` may have any case (HTTP APIs and function URLs lower-case them). Several
    space-separated signatures are accepted if one matches (secret rotation).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRefused(f"body is over {MAX_BODY_BYTES} bytes", status=413)
    webhook_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    offered = lowered.get("webhook-signature", "")
    if not (webhook_id and stamp and offered):
        raise WebhookRefused("missing webhook-id, webhook-timestamp or webhook-signature")
    if not _ID.match(webhook_id):
        raise WebhookRefused("malformed webhook-id", status=400)
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookRefused("malformed webhook-timestamp", status=400)
    if abs(clock() - int(stamp)) > tolerance_s:
        raise WebhookRefused(f"webhook-timestamp is more than {tolerance_s} s away")
    expected = signature(secret, webhook_id, stamp, body).split(",", 1)[1]
    for candidate in offered.split():
        version, _, value = candidate.partition(",")
        value = value.lower()
        if (
            version == SIGNATURE_VERSION
            and _HEX.match(value)
            and hmac.compare_digest(value, expected)
        ):
            return VerifiedWebhook(webhook_id, int(stamp), body)
    raise WebhookRefused("signature does not match")
