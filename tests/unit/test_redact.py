"""Secrets never leave the process: registered values and credential shapes are masked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kling_pipeline.redact import MASK, forget_secrets, redact, register_secret

KEY = "ws_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
WEBHOOK = "whsec_c2VjcmV0LXNpZ25pbmcta2V5"


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    register_secret(KEY)
    register_secret(WEBHOOK)
    yield
    forget_secrets()


ECHOES = [
    "upstream said: Authorization: Bearer {key}",
    '{{"headers": {{"Authorization": "Bearer {key}"}}}}',
    "invalid api key {key}",
    "key={key}&x=1",
    "bad signature for secret {hook}",
    "bad signature for key {bare}",
    "AUTHORIZATION={key}",
    "token: {other}",
    "Bearer {other}",
]


@pytest.mark.parametrize("template", ECHOES)
def test_redact_masks_secrets_when_echoed_in_any_shape(template: str) -> None:
    # Given API text echoing a secret
    text = template.format(
        key=KEY,
        hook=WEBHOOK,
        bare=WEBHOOK.removeprefix("whsec_"),
        other="unregistered-credential-123456",
    )
    # When redacted
    clean = redact(text)
    # Then no secret survives and the mask says so
    for secret in (KEY, WEBHOOK, WEBHOOK.removeprefix("whsec_"), "unregistered-credential-123456"):
        assert secret not in clean
    assert MASK in clean


def test_redact_leaves_ordinary_error_text_alone() -> None:
    text = "prompt: must be at most 2500 characters, got 2600 (code 1401)"
    assert redact(text) == text
