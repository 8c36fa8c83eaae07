"""Submits with a webhook: WaveSpeed's `webhook` query parameter, and the prediction expected.

Whether this container's submits ask for webhooks is decided once, when it is built: only when
webhooks are enabled and the signing secret can be read (without it no webhook could be
verified). The same decision sets the workflow's wait (`Settings.poll.webhook_wait_s`), so a job
either waits for its webhook or polls on the `Poll*` schedule, never a mix.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from ..observability import logger, metrics
from ..settings import Settings
from ..types import Json
from .secret import WebhookSecretUnavailable


class Api(Protocol):
    def check_credentials(self) -> None: ...

    def submit_generation(self, payload: Json, *, webhook_url: str | None = None) -> str: ...

    def enhance_prompt(self, text: str, style: str = "default") -> str: ...


class Expectations(Protocol):
    def expect(self, prediction_id: str) -> None: ...


class Secret(Protocol):
    def get(self) -> str: ...


class WebhookSubmits:
    """The WaveSpeed client as the submit path sees it, asking for a webhook on each submit."""

    def __init__(self, api: Api, webhook_url: str, expectations: Expectations) -> None:
        self._api = api
        self._url = webhook_url
        self._expectations = expectations

    def check_credentials(self) -> None:
        self._api.check_credentials()

    def enhance_prompt(self, text: str, style: str = "default") -> str:
        return self._api.enhance_prompt(text, style)

    def submit_generation(self, payload: Json) -> str:
        prediction_id = self._api.submit_generation(payload, webhook_url=self._url)
        try:
            self._expectations.expect(prediction_id)
        except Exception as exc:  # noqa: BLE001 - whatever fails here, the task is paid for
            # Never turn this into a submit failure: the caller would take a paid task for an
            # unanswered POST. Without the record the webhook is refused (404) and the workflow
            # finds the result on its fallback read.
            logger.warning(
                "prediction not recorded for its webhook", extra={"error": type(exc).__name__}
            )
        return prediction_id


def webhook_plan(settings: Settings, secret: Secret) -> Settings:
    """`settings` as the submit path should use them: webhooks off (the workflow polls) unless
    they are enabled and the signing secret can be read."""
    if not settings.webhook_url or settings.poll.webhook_wait_s <= 0:
        return _polling(settings)
    try:
        secret.get()
    except WebhookSecretUnavailable as exc:
        metrics.add_metric(name="WebhookSecretUnavailable", unit="Count", value=1)
        logger.warning(
            "webhooks off: the signing secret cannot be read", extra={"error": exc.message}
        )
        return _polling(settings)
    return settings


def _polling(settings: Settings) -> Settings:
    return replace(settings, webhook_url="", poll=replace(settings.poll, webhook_wait_s=0))
