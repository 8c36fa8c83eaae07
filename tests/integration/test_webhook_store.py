"""The webhook bookkeeping against DynamoDB (moto): the early-webhook race and dedupe."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from kling_pipeline.webhook.receive import WebhookReceiver, WebhookRequest
from kling_pipeline.webhook.store import UnknownPrediction, WebhookStore
from kling_pipeline.webhook.wait import WaitRequest, wait_for_webhook
from kling_pipeline.webhook_auth import signature

SECRET = "whsec_dGVzdC1zZWNyZXQtdmFsdWU"
NOW = 1_800_000_000


class RecordingWaker:
    """Stands in for Step Functions: records each token it was asked to wake."""

    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake(self, token: str) -> bool:
        self.woken.append(token)
        return True


class FixedSecret:
    def get(self) -> str:
        return SECRET


@pytest.fixture
def store() -> Iterator[WebhookStore]:
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(
            TableName="jobs",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield WebhookStore(db, "jobs", clock=lambda: NOW)


def signed(webhook_id: str, body: bytes) -> WebhookRequest:
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature(SECRET, webhook_id, str(NOW), body),
    }
    return WebhookRequest("POST", headers, body)


def test_early_webhook_wakes_the_wait_that_comes_after_it(store: WebhookStore) -> None:
    # Given a submitted prediction whose webhook arrives before the workflow waits
    waker = RecordingWaker()
    receiver = WebhookReceiver(secret=FixedSecret(), store=store, waker=waker, clock=lambda: NOW)
    store.expect("pred-1")
    answer = receiver.receive(signed("hook-1", b'{"id":"pred-1","status":"completed"}'))

    # When the workflow then registers its wait
    wait_for_webhook(WaitRequest("pred-1", "token-1"), store, waker)

    # Then the webhook was accepted and the late wait was woken at once
    assert answer.status == 200
    assert waker.woken == ["token-1"]


def test_webhook_after_the_wait_wakes_it_once_and_duplicates_do_nothing(
    store: WebhookStore,
) -> None:
    # Given a workflow waiting on its prediction
    waker = RecordingWaker()
    receiver = WebhookReceiver(secret=FixedSecret(), store=store, waker=waker, clock=lambda: NOW)
    store.expect("pred-2")
    wait_for_webhook(WaitRequest("pred-2", "token-2"), store, waker)
    body = b'{"id":"pred-2","status":"completed"}'

    # When the webhook comes, then again with the same webhook-id
    first = receiver.receive(signed("hook-2", body))
    again = receiver.receive(signed("hook-2", body))

    # Then the wait was woken once, and both answers are 200
    assert (first.status, again.status) == (200, 200)
    assert waker.woken == ["token-2"]


def test_early_webhook_wakes_only_the_first_wait(store: WebhookStore) -> None:
    # Given an early webhook consumed by one wait
    waker = RecordingWaker()
    store.expect("pred-3")
    store.arrived("pred-3")
    wait_for_webhook(WaitRequest("pred-3", "token-a"), store, waker)

    # When the workflow waits again (the status read said "not yet")
    wait_for_webhook(WaitRequest("pred-3", "token-b"), store, waker)

    # Then only the first wait was woken: the second one waits for a new webhook
    assert waker.woken == ["token-a"]


def test_progress_webhook_wakes_nothing(store: WebhookStore) -> None:
    # Given a waiting workflow
    waker = RecordingWaker()
    receiver = WebhookReceiver(secret=FixedSecret(), store=store, waker=waker, clock=lambda: NOW)
    store.expect("pred-4")
    wait_for_webhook(WaitRequest("pred-4", "token-4"), store, waker)

    # When a validly signed "processing" webhook comes
    answer = receiver.receive(signed("hook-4", b'{"id":"pred-4","status":"processing"}'))

    # Then it is acknowledged and nobody is woken
    assert answer.status == 200
    assert waker.woken == []


def test_arrival_of_unknown_prediction_is_refused(store: WebhookStore) -> None:
    # Given a prediction nobody submitted
    # When its arrival is marked / Then it is refused, and the endpoint answers 404
    with pytest.raises(UnknownPrediction):
        store.arrived("stranger")
    receiver = WebhookReceiver(
        secret=FixedSecret(), store=store, waker=RecordingWaker(), clock=lambda: NOW
    )
    answer = receiver.receive(signed("hook-5", b'{"id":"stranger","status":"completed"}'))
    assert answer.status == 404
