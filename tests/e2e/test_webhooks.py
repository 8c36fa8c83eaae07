"""Webhook fast path end to end: whatever a webhook meets, one payment and one outcome."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from kling_local.pipeline import LocalPipeline, RunResult
from kling_local.simulator import SimulatorConfig
from kling_local.simulator.webhooks import FORGED_OUTPUT, build_request
from tests.conftest import PipelineFactory, run, simulator_of

SECRET = SimulatorConfig.webhook_secret
#: Generations long enough that the workflow is waiting when the webhook comes.
SIM = SimulatorConfig(generation_seconds=1.5, processing_after_seconds=0.1)


def states_entered(pipeline: LocalPipeline, job_id: str) -> list[str]:
    arn = f"{pipeline.state_machine_arn}:{job_id}".replace(":stateMachine:", ":execution:")
    events = pipeline.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]


def one_task_of(pipeline: LocalPipeline) -> str:
    tasks = simulator_of(pipeline).tasks()
    assert len(tasks) == 1, f"{len(tasks)} paid tasks"
    return str(tasks[0]["id"])


def assert_one_completed_job(pipeline: LocalPipeline, result: RunResult, job_id: str) -> None:
    notes = result.by_job().get(job_id, [])
    assert [n["status"] for n in notes] == ["completed"], notes
    task_id = one_task_of(pipeline)
    assert simulator_of(pipeline).stats()["submit_requests"] == 1
    output = notes[0]["outputs"][0]
    data = pipeline.read_object(output["key"])
    assert hashlib.sha256(data).hexdigest() == simulator_of(pipeline).output_sha256(task_id, 0)


@pytest.mark.parametrize(
    "marker",
    [
        "",
        "[sim:webhook-lost]",
        "[sim:webhook-duplicate]",
        "[sim:webhook-delay-1]",
        "[sim:webhook-forged]",
        "[sim:webhook-replayed]",
        "[sim:webhook-out-of-order]",
    ],
)
def test_job_completes_once_whatever_its_webhook_meets(
    make_pipeline: PipelineFactory, marker: str
) -> None:
    # Given the pipeline with webhooks on and a job whose webhook meets `marker`
    pipeline = make_pipeline(sim=SIM)
    pipeline.send_prompt(f"A lighthouse in a storm {marker}", job_id="hook-1")

    # When the pipeline runs to idle
    result = run(pipeline)
    simulator_of(pipeline).wait_for_webhooks()

    # Then one paid task, one completed notification, and the stored video is the genuine one
    assert_one_completed_job(pipeline, result, "hook-1")
    # ... reached through the webhook wait, never through the timed polling wait
    assert "Wait for webhook" in states_entered(pipeline, "hook-1")
    assert "Wait before next check" not in states_entered(pipeline, "hook-1")


def test_genuine_webhook_wakes_the_workflow_before_its_fallback(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a fallback far longer than the run may take
    pipeline = make_pipeline(sim=SIM, webhook_fallback_s=600)
    pipeline.send_prompt("A paper boat on a river", job_id="fast-1")

    # When the pipeline runs to idle
    result = run(pipeline)

    # Then the webhook woke the wait (a timeout would have taken ten minutes) and the status was
    # read once
    assert_one_completed_job(pipeline, result, "fast-1")
    assert states_entered(pipeline, "fast-1").count("Check prediction status") == 1
    assert simulator_of(pipeline).stats()["result_requests"] == 1
    assert [r.response_status for r in simulator_of(pipeline).webhooks_sent()] == [200]


def test_forged_and_replayed_webhooks_are_refused(make_pipeline: PipelineFactory) -> None:
    # Given a job whose webhook is preceded by a forgery and followed by a replay
    pipeline = make_pipeline(sim=SIM)
    pipeline.send_prompt("A desert road [sim:webhook-forged] [sim:webhook-replayed]", job_id="f-1")

    # When the pipeline runs to idle
    result = run(pipeline)
    simulator_of(pipeline).wait_for_webhooks()

    # Then the forgery and the replay were answered 401 and the genuine one 200
    answers = {r.kind: r.response_status for r in simulator_of(pipeline).webhooks_sent()}
    assert answers == {"forged": 401, "genuine": 200, "replayed": 401}
    # ... and what was stored is the genuine video, not the forged body's output
    assert_one_completed_job(pipeline, result, "f-1")
    assert FORGED_OUTPUT not in json.dumps(result.notifications)


def test_validly_signed_body_cannot_change_what_is_stored(make_pipeline: PipelineFactory) -> None:
    # Given a job, and a correctly signed webhook for its prediction claiming another output
    pipeline = make_pipeline(sim=SIM, webhook_fallback_s=600)
    pipeline.send_prompt("A quiet harbour [sim:webhook-lost]", job_id="inject-1")
    sim = simulator_of(pipeline)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [t["status"] for t in sim.tasks()] != ["completed"]:
        pipeline.poll_queues_once()
        time.sleep(0.05)
    task_id = one_task_of(pipeline)
    body = {"id": task_id, "status": "completed", "outputs": [FORGED_OUTPUT]}
    config = simulator_of(pipeline).config
    signed = build_request("genuine", body, config, "inject-hook-1")

    # When it reaches the endpoint
    url = pipeline.webhook_url
    request = urllib.request.Request(url, data=signed.body, headers=signed.headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        status = answer.status
    result = run(pipeline)

    # Then it woke the workflow, which read the result itself: the genuine video is stored
    assert status == 200
    assert_one_completed_job(pipeline, result, "inject-1")
    assert FORGED_OUTPUT not in json.dumps(result.notifications)


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({}, b'{"id":"x","status":"completed"}', 401),
        ({"webhook-signature": "v3," + "0" * 64}, None, 401),
        ({}, b"x" * (64 * 1024 + 1), 413),
    ],
)
def test_endpoint_refuses_requests_that_are_not_authentic(
    pipeline: LocalPipeline, headers: dict[str, str], body: bytes | None, expected: int
) -> None:
    # Given a request without a valid signature, or too large
    request_headers = {"webhook-id": "abc", "webhook-timestamp": "1", **headers}
    data = body if body is not None else b'{"id":"x","status":"completed"}'
    request = urllib.request.Request(
        pipeline.webhook_url, data=data, headers=request_headers, method="POST"
    )

    # When it reaches the endpoint
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code

    # Then it is refused
    assert status == expected


def test_unknown_prediction_is_refused_with_404(pipeline: LocalPipeline) -> None:
    # Given a correctly signed webhook for a prediction this pipeline never submitted
    body = {"id": "not-ours", "status": "completed", "outputs": []}
    signed = build_request("genuine", body, simulator_of(pipeline).config, "stranger-1")
    request = urllib.request.Request(
        pipeline.webhook_url, data=signed.body, headers=signed.headers, method="POST"
    )

    # When it reaches the endpoint
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code

    # Then it is refused
    assert status == 404


def test_webhooks_off_polls_on_the_schedule(make_pipeline: PipelineFactory) -> None:
    # Given EnableWebhooks=false
    pipeline = make_pipeline(sim=SIM, parameter_overrides={"EnableWebhooks": "false"})
    pipeline.send_prompt("A windmill at dusk", job_id="poll-1")

    # When the pipeline runs to idle
    result = run(pipeline)

    # Then the job completes through timed waits, and no submit asked for a webhook
    assert_one_completed_job(pipeline, result, "poll-1")
    assert "Wait for webhook" not in states_entered(pipeline, "poll-1")
    assert "Wait before next check" in states_entered(pipeline, "poll-1")
    assert simulator_of(pipeline).webhooks_sent() == []


def test_secret_is_never_in_any_output(
    make_pipeline: PipelineFactory, capfd: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    # Given a run with webhooks on, a forged and a duplicated webhook
    pipeline = make_pipeline(sim=SIM)
    pipeline.send_prompt("A glass city [sim:webhook-forged] [sim:webhook-duplicate]", job_id="s-1")

    # When it runs and its outputs are exported
    result = run(pipeline)
    simulator_of(pipeline).wait_for_webhooks()
    pipeline.export(tmp_path)

    # Then neither the secret nor its key part appears in any notification, file or log line
    printed = capfd.readouterr()
    texts = [json.dumps(result.notifications), printed.out, printed.err]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in texts:
        assert SECRET not in text
        assert SECRET.removeprefix("whsec_") not in text
