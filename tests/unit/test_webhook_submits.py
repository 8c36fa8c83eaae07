"""A paid submit stays a paid submit, whatever happens to its webhook bookkeeping afterwards."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from kling_pipeline.errors import TransientError
from kling_pipeline.types import Json
from kling_pipeline.webhook.submitting import WebhookSubmits


class PayingApi:
    """Answers every submit with a prediction id and counts the POSTs (each one is paid)."""

    def __init__(self) -> None:
        self.posts: list[str | None] = []

    def check_credentials(self) -> None:
        return None

    def submit_generation(self, payload: Json, *, webhook_url: str | None = None) -> str:
        self.posts.append(webhook_url)
        return f"pred-{len(self.posts)}"

    def enhance_prompt(self, text: str, style: str = "default") -> str:
        return text


class FailingExpectations:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def expect(self, prediction_id: str) -> None:
        raise self.error


ERRORS = [
    TransientError("table throttled"),
    ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutItem"),
    RuntimeError("anything else"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_submit_returns_the_paid_prediction_when_recording_it_for_the_webhook_fails(
    error: Exception,
) -> None:
    # Given a submit that asks for a webhook, and a store that cannot record the prediction
    api = PayingApi()
    submits = WebhookSubmits(api, "https://hooks.example/x", FailingExpectations(error))

    # When the job is submitted
    prediction_id = submits.submit_generation({"prompt": "a fox"})

    # Then the paid task is returned as submitted (one POST, with the webhook URL), never
    # turned into a submit failure that the caller could take for an unanswered POST
    assert prediction_id == "pred-1"
    assert api.posts == ["https://hooks.example/x"]
