"""WaveSpeed's side of webhooks: the URL a submit may name, the faults a task's webhook meets,
the signed requests that make up its delivery, and the record of what was sent.

Signing follows WaveSpeed's "Verifying Webhooks" page (their own "v3" scheme): HMAC-SHA256 over
`"{webhook-id}.{webhook-timestamp}.{raw body}"`, keyed with the account's secret minus its
`whsec_` prefix taken as text (not base64-decoded), sent as `webhook-signature: v3,<hex>`.
Written here independently of the pipeline's verifier, so each checks the other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .config import (
    MARKER_WEBHOOK_DUPLICATE,
    MARKER_WEBHOOK_FORGED,
    MARKER_WEBHOOK_LOST,
    MARKER_WEBHOOK_OUT_OF_ORDER,
    MARKER_WEBHOOK_REPLAYED,
    SimulatorConfig,
)
from .wire import envelope

#: Longest webhook URL a submit may carry; the common browser/CDN bound on URLs.
MAX_URL_LENGTH = 2048
URL_SCHEMES = ("http", "https")
INVALID_URL_MESSAGE = (
    f"webhook must be an absolute http or https URL of at most {MAX_URL_LENGTH} characters"
)
#: How old a replayed request's timestamp is: well past the 300 s receivers must allow.
REPLAY_AGE_SECONDS = 3600
#: Where a forged "completed" webhook claims the video is.
FORGED_OUTPUT = "https://attacker.invalid/forged.mp4"
_DELAY = re.compile(r"\[sim:webhook-delay(?:-(\d{1,6}(?:\.\d{1,3})?))?\]")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

#: The kinds of request a delivery is made of, in the order they are sent.
FORGED, GENUINE, DUPLICATE, REPLAYED, STALE = "forged", "genuine", "duplicate", "replayed", "stale"


def webhook_url_problem(url: str) -> str | None:
    """Why a submit's webhook URL is refused, or None when it is acceptable.

    A real service takes only absolute http(s) URLs with a host, of bounded length, with no
    spaces or control characters and no credentials. WaveSpeed's pages ask for a public HTTPS
    endpoint; plain http stays allowed here because the local runner listens on 127.0.0.1.
    """
    if len(url) > MAX_URL_LENGTH or _CONTROL.search(url):
        return INVALID_URL_MESSAGE
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return INVALID_URL_MESSAGE
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname or not port_ok:
        return INVALID_URL_MESSAGE
    if parts.username is not None or parts.password is not None:
        return "webhook URL must not carry credentials"
    return None


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value WaveSpeed sends: `v3,` and the lower-case hex HMAC."""
    key = secret[len("whsec_") :].encode("utf-8")
    signed = b".".join((webhook_id.encode("ascii"), str(timestamp).encode("ascii"), body))
    return "v3," + hmac.new(key, signed, hashlib.sha256).hexdigest()


def new_webhook_id() -> str:
    """An event id shaped like WaveSpeed's (25 hex characters)."""
    return secrets.token_hex(13)[:25]


@dataclass(frozen=True)
class WebhookFaults:
    """What goes wrong with one task's webhook; several may apply at once."""

    lost: bool = False
    duplicate: bool = False
    delay_seconds: float = 0.0
    forged: bool = False
    replayed: bool = False
    out_of_order: bool = False

    def names(self) -> list[str]:
        flags = {
            "lost": self.lost,
            "duplicate": self.duplicate,
            "delayed": self.delay_seconds > 0,
            "forged": self.forged,
            "replayed": self.replayed,
            "out_of_order": self.out_of_order,
        }
        return [name for name, dealt in flags.items() if dealt]

    def kinds(self) -> list[str]:
        """The requests of the delivery, in sending order: a forgery first (the dangerous
        order), the genuine one (twice when duplicated), then a replay and a stale one."""
        kinds = [FORGED] if self.forged else []
        if not self.lost:
            kinds += [GENUINE, DUPLICATE] if self.duplicate else [GENUINE]
        if self.replayed:
            kinds.append(REPLAYED)
        if self.out_of_order:
            kinds.append(STALE)
        return kinds


def deal_faults(prompt: str, config: SimulatorConfig, rng: random.Random) -> WebhookFaults:
    """A task's webhook faults: prompt markers, else the configured rates (a roll per rate,
    drawn only when that rate is set, so unset rates leave the sequence alone)."""

    def rolled(marker: str, rate: float) -> bool:
        roll = bool(rate) and rng.random() < rate
        return marker in prompt or roll

    delay_rate = config.webhook_delay_rate
    delay_roll = bool(delay_rate) and rng.random() < delay_rate
    delay_marker = _DELAY.search(prompt)
    delayed = delay_roll or delay_marker is not None
    seconds = config.webhook_delay_seconds
    if delay_marker is not None and delay_marker.group(1):
        seconds = float(delay_marker.group(1))
    return WebhookFaults(
        lost=rolled(MARKER_WEBHOOK_LOST, config.webhook_lost_rate),
        duplicate=rolled(MARKER_WEBHOOK_DUPLICATE, config.webhook_duplicate_rate),
        delay_seconds=seconds * config.time_scale if delayed else 0.0,
        forged=rolled(MARKER_WEBHOOK_FORGED, config.webhook_forged_rate),
        replayed=rolled(MARKER_WEBHOOK_REPLAYED, config.webhook_replayed_rate),
        out_of_order=rolled(MARKER_WEBHOOK_OUT_OF_ORDER, config.webhook_out_of_order_rate),
    )


@dataclass(frozen=True)
class WebhookRequest:
    """One signed POST, ready to send: the exact bytes and headers."""

    kind: str
    webhook_id: str
    timestamp: int
    body: bytes
    headers: dict[str, str]
    status: str  # the prediction status the body reports


def stale_prediction(prediction: dict[str, Any]) -> dict[str, Any]:
    """The same prediction as it looked while still processing."""
    return {
        **prediction,
        "status": "processing",
        "outputs": [],
        "has_nsfw_contents": [],
        "error": "",
        "code": 0,
        "executionTime": 0,
        "timings": {"inference": 0},
    }


def forged_prediction(prediction: dict[str, Any]) -> dict[str, Any]:
    """What an attacker would send: a completed prediction pointing at their own video."""
    return {
        **prediction,
        "status": "completed",
        "outputs": [FORGED_OUTPUT],
        "has_nsfw_contents": [False],
        "error": "",
        "code": 0,
    }


def request_id(kind: str, genuine_id: str) -> str:
    """The `webhook-id` a request of `kind` carries: the genuine event's id for its resends
    (a duplicate or a replay is the same event), a fresh one for another event or a forgery."""
    return genuine_id if kind in (GENUINE, DUPLICATE, REPLAYED) else new_webhook_id()


def build_request(
    kind: str,
    prediction: dict[str, Any],
    config: SimulatorConfig,
    webhook_id: str,
    now: float | None = None,
) -> WebhookRequest:
    """The signed request of one `kind` for a task's prediction, signed at `now`."""
    stamp = int(time.time() if now is None else now)
    payload = prediction
    secret = config.webhook_secret
    if kind == STALE:
        payload = stale_prediction(prediction)
    elif kind == FORGED:
        # Signed with a key that is not the account's: well-formed, but it cannot verify.
        payload = forged_prediction(prediction)
        secret = "whsec_" + secrets.token_hex(16)
    elif kind == REPLAYED:
        # A copy of the genuine request captured an hour ago: its signature is valid for its
        # own (old) timestamp, which is what a receiver must refuse.
        stamp -= REPLAY_AGE_SECONDS
    document = envelope(payload) if config.webhook_body == "envelope" else payload
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "WaveSpeedSimulator-Webhook/1.0",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, webhook_id, stamp, body),
    }
    return WebhookRequest(kind, webhook_id, stamp, body, headers, str(payload["status"]))


@dataclass(frozen=True)
class WebhookRecord:
    """One request of a task's webhook delivery as it ended.

    `outcome`: "acknowledged" (2xx), "refused" (another answer, not retried), "abandoned"
    (every attempt met a connection error, timeout, 429 or 5xx). `response_status` is the last
    HTTP status (None when no answer came); `attempts` counts HTTP requests made.
    """

    task_id: str
    kind: str
    webhook_id: str
    timestamp: int
    status: str
    url: str
    attempts: int
    response_status: int | None
    outcome: str
    body: bytes
    headers: dict[str, str]
