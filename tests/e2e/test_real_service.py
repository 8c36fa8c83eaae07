"""End-to-end: the money promises held against the simulator speaking the real WaveSpeed.

Queueing over the account's concurrency, outages, moderation and refunds, outputs that
cannot be stored yet, ambiguous submits: each ends with the one notification a user expects,
one paid task per job, and no paid video lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kling_cli.app import main
from kling_local.simulator import SimulatorConfig
from kling_local.simulator.config import Outage
from kling_pipeline import wiring
from tests.conftest import PipelineFactory, run, simulator_of
from tests.integration.test_cli import driving, resources_of


def only(notes: dict[str, list[dict[str, Any]]], job_id: str) -> dict[str, Any]:
    assert len(notes.get(job_id, [])) == 1, f"{job_id}: {notes.get(job_id)}"
    return notes[job_id][0]


def test_queued_job_completes_when_it_waits_longer_than_the_generation_deadline(
    make_pipeline: PipelineFactory,
) -> None:
    # Given an account that processes one task at a time, 2.5 s per video, and a 4 s deadline
    sim = SimulatorConfig(generation_seconds=2.5, processing_after_seconds=0.1, max_concurrency=1)
    pipeline = make_pipeline(sim=sim, poll_deadline_s=4)

    # When three jobs arrive at once: the last waits ~5 s in WaveSpeed's queue before starting
    for n in range(3):
        pipeline.send_prompt(f"a lighthouse, take {n}", job_id=f"queued-{n}")
    result = run(pipeline)

    # Then every job completes: the time queued does not count against the generation
    notes = result.by_job()
    assert [only(notes, f"queued-{n}")["status"] for n in range(3)] == ["completed"] * 3
    assert simulator_of(pipeline).stats()["tasks_created"] == 3


def test_job_completes_when_status_reads_fail_for_40_seconds(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a 40-second outage on status reads (HTTP 200 with envelope code 5003) starting
    # right after the submit, and a generation deadline longer than the outage
    outage = Outage(start_seconds=0.5, seconds=40, on="result", form="code")
    sim = SimulatorConfig(generation_seconds=1.0, processing_after_seconds=0.1, outages=(outage,))
    pipeline = make_pipeline(sim=sim, poll_deadline_s=120)

    # When a job runs through it
    pipeline.send_prompt("a harbour at dawn", job_id="outage-1")
    result = run(pipeline)

    # Then it completes once the API answers again, with one paid task
    note = only(result.by_job(), "outage-1")
    assert note["status"] == "completed", note["error"]
    assert simulator_of(pipeline).stats()["tasks_created"] == 1


def test_moderated_job_fails_with_its_own_code_and_is_refunded(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a daily budget and a prompt WaveSpeed's moderation refuses after the submit
    pipeline = make_pipeline(env={"DAILY_BUDGET_USD": "100"})

    # When it runs
    pipeline.send_prompt("something refused [sim:moderation]", job_id="moderated-1")
    result = run(pipeline)

    # Then the job fails as moderated, nothing is charged, and the budget has it back
    note = only(result.by_job(), "moderated-1")
    assert note["status"] == "failed"
    assert note["error"]["code"] == "content_moderated"
    assert note["cost"]["paid"] is False and note["cost"]["wavespeed_usd"] == 0.0
    assert "refund" in note["cost"]["refund_reason"]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    item = pipeline.dynamodb.get_item(
        TableName=pipeline.names["JobsTable"], Key={"pk": {"S": f"budget#{day}"}}
    )["Item"]
    assert float(item["spent_usd"]["N"]) == 0.0


def test_unstorable_output_is_reported_with_its_source_then_restored(
    make_pipeline: PipelineFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given outputs served from a host the pipeline does not allow yet
    pipeline = make_pipeline()
    sim = simulator_of(pipeline)
    port = sim.host_port.rsplit(":", 1)[1]
    sim.config.output_host = f"http://localhost:{port}"
    pipeline.poll_queues_once()  # the bucket notification's test event

    # When a job's video is made but cannot be stored
    pipeline.send_prompt("a paid fox", job_id="unstored-1")
    failed = only(run(pipeline).by_job(), "unstored-1")

    # Then the failed notification says where the video still is, and until when
    assert failed["status"] == "failed"
    [source] = failed["outputs"]
    assert "key" not in source and failed["unstored_outputs"] == [source]
    assert source["source_url"].startswith(f"http://localhost:{port}/")
    expires = datetime.fromisoformat(source["source_expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert "restore unstored-1" in failed["error"]["message"]

    # When the host is allowed and the re-store command runs
    monkeypatch.setenv("LOCAL_OUTPUT_HOSTS", f"{sim.host_port},localhost:{port}")
    wiring.reset()
    code = main(
        ["restore", "unstored-1", "--interval", "0.1", "--timeout", "60"],
        resources=resources_of(pipeline),
        sleep=driving(pipeline),
    )
    result = run(pipeline)

    # Then the video is stored, a completed notification follows the failed one, and no
    # second task was paid for
    assert code == 0, capsys.readouterr()
    first, completed = result.by_job()["unstored-1"]
    assert (first["status"], completed["status"]) == ("failed", "completed")
    assert completed["outputs"][0]["size"] > 0
    assert pipeline.read_object(completed["outputs"][0]["key"])
    assert sim.stats()["tasks_created"] == 1 and sim.stats()["submit_requests"] == 1


def test_lost_submit_answer_is_recovered_from_the_history_with_one_post(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a submit whose connection drops after WaveSpeed created the (paid) task
    pipeline = make_pipeline(env={"RECONCILE_WAITS_S": "0,0.5"})
    pipeline.send_prompt("A lost answer [sim:drop-submit]", job_id="recovered-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the task is found in the prediction history and the job completes with its video,
    # after exactly one POST
    note = only(result.by_job(), "recovered-1")
    assert note["status"] == "completed", note["error"]
    stats = simulator_of(pipeline).stats()
    assert (stats["submit_requests"], stats["tasks_created"]) == (1, 1)
    [task] = simulator_of(pipeline).tasks()
    assert note["request_id"] == task["id"]
    assert pipeline.dead_letters() == []


def test_lost_submit_answer_stays_unknown_when_the_history_shows_no_task(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a submit answered 500 that created nothing, and another job's task in the window
    pipeline = make_pipeline(env={"RECONCILE_WAITS_S": "0,0.5"})
    pipeline.send_prompt("someone else's fox", job_id="other-1")
    run(pipeline)
    pipeline.send_prompt("A lost answer [sim:500-submit]", job_id="unknown-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the other job's task is not taken: the job ends unknown, with the evidence
    note = only(result.by_job(), "unknown-1")
    assert note["error"]["code"] == "submit_outcome_unknown"
    assert "Reconciling: no unclaimed" in note["error"]["message"]
    assert simulator_of(pipeline).stats()["submit_requests"] == 2


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ({"activated": False}, "api_key_not_activated"),
        ({"balance_usd": 1.0}, "insufficient_balance"),
    ],
)
def test_job_is_parked_redrivable_when_the_account_cannot_pay(
    make_pipeline: PipelineFactory, account: dict[str, Any], code: str
) -> None:
    # Given an account whose key is not activated, or whose credit is short of one video
    sim = SimulatorConfig(generation_seconds=0.5, processing_after_seconds=0.1, **account)
    pipeline = make_pipeline(sim=sim)

    # When a job arrives
    pipeline.send_prompt("a fox in the snow", job_id="account-1")
    result = run(pipeline)

    # Then it fails with the account's own code, nothing paid, parked for redrive
    note = only(result.by_job(), "account-1")
    assert note["error"]["code"] == code
    assert note["cost"]["paid"] is False
    assert simulator_of(pipeline).stats()["tasks_created"] == 0
    [parked] = pipeline.dead_letters()
    assert parked["MessageAttributes"]["error_code"]["StringValue"] == code
    record = wiring.ledger().get("account-1")
    assert record is not None and record.redrivable == "new"
