"""WaveSpeed webhook verification: only an authentic, fresh, bounded request passes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from kling_pipeline.webhook_auth import (
    MAX_BODY_BYTES,
    TOLERANCE_S,
    WebhookRefused,
    signature,
    verify,
)

SECRET = "whsec_" + "Zm9vYmFyYmF6cXV4" * 2
NOW = 1_780_000_000.0
BODY = b'{"id":"pred-1","status":"completed","outputs":["https://x/y.mp4"]}'


def _headers(
    webhook_id: str = "msg_1", stamp: int = int(NOW), body: bytes = BODY
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature(SECRET, webhook_id, str(stamp), body),
    }


def _manual_v3(secret: str, webhook_id: str, stamp: str, body: bytes) -> str:
    key = secret.removeprefix("whsec_").encode()
    return hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_verify_accepts_authentic_request_in_any_header_case() -> None:
    # Given a request signed as WaveSpeed documents it (hex HMAC, key = secret minus whsec_)
    headers = {k.upper(): v for k, v in _headers().items()}
    assert headers["WEBHOOK-SIGNATURE"] == "v3," + _manual_v3(SECRET, "msg_1", str(int(NOW)), BODY)
    # When / Then
    verified = verify(headers, BODY, SECRET, clock=lambda: NOW)
    assert (verified.webhook_id, verified.body) == ("msg_1", BODY)


def test_verify_accepts_when_one_of_several_signatures_matches() -> None:
    headers = _headers()
    headers["webhook-signature"] = "v3," + "0" * 64 + " " + headers["webhook-signature"]
    verify(headers, BODY, SECRET, clock=lambda: NOW)


@pytest.mark.parametrize("skew", [-TOLERANCE_S, -1, 0, 1, TOLERANCE_S])
def test_verify_accepts_timestamps_within_tolerance(skew: int) -> None:
    verify(_headers(stamp=int(NOW) + skew), BODY, SECRET, clock=lambda: NOW)


@pytest.mark.parametrize("skew", [-TOLERANCE_S - 1, TOLERANCE_S + 1, -86_400, 10**9])
def test_verify_refuses_stale_or_future_timestamps_when_replayed(skew: int) -> None:
    with pytest.raises(WebhookRefused):
        verify(_headers(stamp=int(NOW) + skew), BODY, SECRET, clock=lambda: NOW)


def _tampered_cases() -> list[tuple[str, dict[str, str], bytes]]:
    rng = random.Random(7)
    cases: list[tuple[str, dict[str, str], bytes]] = []
    for i in range(20):  # every single-byte flip of the body breaks the signature
        body = bytearray(BODY)
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        cases.append((f"body_flip_{i}", _headers(), bytes(body)))
    headers = _headers()
    headers["webhook-id"] = "msg_2"
    cases.append(("other_id", headers, BODY))
    headers = _headers()
    headers["webhook-timestamp"] = str(int(NOW) + 1)
    cases.append(("other_timestamp", headers, BODY))
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = _headers()
        del headers[name]
        cases.append((f"missing_{name}", headers, BODY))
    sig = _headers()["webhook-signature"].split(",", 1)[1]
    for name, value in [
        ("v1_prefix", "v1," + sig),
        ("no_prefix", sig),
        ("truncated", "v3," + sig[:-2]),
        ("empty", "v3,"),
        (
            "wrong_secret",
            "v3," + _manual_v3("whsec_other-secret-value", "msg_1", str(int(NOW)), BODY),
        ),
        (
            "secret_with_prefix_as_key",
            "v3,"
            + hmac.new(
                SECRET.encode(), f"msg_1.{int(NOW)}.".encode() + BODY, hashlib.sha256
            ).hexdigest(),
        ),
        (
            "standard_webhooks_scheme",
            "v1,"
            + base64.b64encode(
                hmac.new(
                    base64.b64decode(SECRET.removeprefix("whsec_")),
                    f"msg_1.{int(NOW)}.".encode() + BODY,
                    hashlib.sha256,
                ).digest()
            ).decode(),
        ),
    ]:
        headers = _headers()
        headers["webhook-signature"] = value
        cases.append((name, headers, BODY))
    for name, stamp in [
        ("stamp_float", "1780000000.0"),
        ("stamp_negative", "-5"),
        ("stamp_huge", "9" * 40),
        ("stamp_arabic_digits", "١٧٨٠٠٠٠٠٠٠"),
    ]:
        headers = _headers()
        headers["webhook-timestamp"] = stamp
        cases.append((name, headers, BODY))
    for name, webhook_id in [
        ("id_newline", "a\nb"),
        ("id_dot_injection", "a.b b"),
        ("id_long", "x" * 500),
    ]:
        cases.append((name, _headers(webhook_id=webhook_id), BODY))
    return cases


CASES = _tampered_cases()


@pytest.mark.parametrize(("name", "headers", "body"), CASES, ids=[c[0] for c in CASES])
def test_verify_refuses_when_forged_or_malformed(
    name: str, headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(WebhookRefused) as refused:
        verify(headers, body, SECRET, clock=lambda: NOW)
    assert 400 <= refused.value.status < 500


def test_verify_refuses_oversized_body_before_hashing() -> None:
    body = b"x" * (MAX_BODY_BYTES + 1)
    with pytest.raises(WebhookRefused) as refused:
        verify(_headers(body=body), body, SECRET, clock=lambda: NOW)
    assert refused.value.status == 413


def test_refusal_never_echoes_the_secret() -> None:
    for _, headers, body in CASES:
        try:
            verify(headers, body, SECRET, clock=lambda: NOW)
        except WebhookRefused as exc:
            assert SECRET.removeprefix("whsec_") not in str(exc)
