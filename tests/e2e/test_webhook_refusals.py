"""The local webhook endpoint refuses correctly signed requests it must not trust: timestamps
more than 300 s away (either direction) and bodies that are not a prediction of this pipeline;
a refusal changes nothing a user sees."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from kling_local.pipeline import LocalPipeline
from kling_local.simulator.webhooks import new_webhook_id, sign
from tests.conftest import run, simulator_of

TOLERANCE_S = 300


def post_signed(pipeline: LocalPipeline, body: bytes, stamp: int) -> int:
    """POSTs `body` signed with the account's real secret at `stamp`; the HTTP status."""
    webhook_id = new_webhook_id()
    secret = simulator_of(pipeline).config.webhook_secret
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, webhook_id, stamp, body),
    }
    request = urllib.request.Request(pipeline.webhook_url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def finished_job(pipeline: LocalPipeline) -> tuple[bytes, list[str]]:
    """Runs one job to completion: the genuine prediction body and what the run published."""
    pipeline.send_prompt("A harbour at dawn", job_id="hook-ts")
    result = run(pipeline)
    [task] = simulator_of(pipeline).tasks()
    body = json.dumps({"id": task["id"], "status": "completed", "outputs": task["outputs"]})
    return body.encode(), [json.dumps(n, sort_keys=True) for n in result.notifications]


@pytest.mark.parametrize("skew", [-TOLERANCE_S - 1, TOLERANCE_S + 1, -3600, 86_400])
def test_signed_webhook_is_refused_and_changes_nothing_when_its_timestamp_is_too_far(
    pipeline: LocalPipeline, skew: int
) -> None:
    # Given a job that completed, and its genuine prediction body
    body, published = finished_job(pipeline)
    states = pipeline.job_states()

    # When that body arrives correctly signed, but stamped `skew` seconds away from now
    status = post_signed(pipeline, body, int(time.time()) + skew)

    # Then it is refused (4xx), and no notification, job state or task was added or changed
    assert 400 <= status < 500
    after = pipeline.run_until_idle(10)
    assert [json.dumps(n, sort_keys=True) for n in after.notifications] == published
    assert pipeline.job_states() == states
    assert len(simulator_of(pipeline).tasks()) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"completed"',
        b'{"status": "completed"}',
        b'{"id": "../../etc", "status": "completed"}',
        b'{"id": "a1b2c3", "status": 3}',
        b"not json",
    ],
)
def test_signed_body_is_refused_when_it_is_not_a_prediction_object(
    pipeline: LocalPipeline, body: bytes
) -> None:
    # Given a job that completed
    _, published = finished_job(pipeline)

    # When a correctly signed, current request carries a body that is no prediction
    status = post_signed(pipeline, body, int(time.time()))

    # Then it is refused (4xx) and the run's notifications stay as they were
    assert 400 <= status < 500
    after = pipeline.run_until_idle(10)
    assert [json.dumps(n, sort_keys=True) for n in after.notifications] == published


def test_signed_webhook_within_the_tolerance_is_answered_without_a_second_notification(
    pipeline: LocalPipeline,
) -> None:
    # Given a job that completed (the control: the same request, stamped within 300 s)
    body, published = finished_job(pipeline)

    # When its genuine body arrives again, correctly signed, 299 s old
    status = post_signed(pipeline, body, int(time.time()) - TOLERANCE_S + 1)

    # Then it is not refused for its timestamp, and still no second notification follows
    assert status < 400
    after = pipeline.run_until_idle(10)
    assert [json.dumps(n, sort_keys=True) for n in after.notifications] == published
