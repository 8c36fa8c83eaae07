"""Unit tests: the jobs-table record and the Step Functions payload each have one codec."""

from __future__ import annotations

import json

from kling_pipeline.errors import ErrorDetail, TransientError
from kling_pipeline.job.record import JobRecord, Outcome, Stage
from kling_pipeline.job.workflow import Delivery, JobSummary, Poll, WorkflowState
from kling_pipeline.settings import PollSchedule
from tests.conftest import load_event


def test_record_round_trips_through_the_table_item() -> None:
    # Given a record with every field set
    record = JobRecord(
        job_id="fox-1",
        stage=Stage.RUNNING,
        prediction_id="pred-1",
        execution_arn="arn:aws:states:us-east-1:1:execution:jobs:fox-1",
        created_at="2026-01-01T00:00:00+00:00",
        submitted_at="2026-01-01T00:00:01+00:00",
        job_input={"prompt": "a fox", "job_id": "fox-1"},
        source={"type": "sqs", "message_id": "m"},
        execution_input={"job": {"job_id": "fox-1"}},
        lease_until=1_700_000_300,
        terminal_status=Outcome.FAILED,
        terminal_error=ErrorDetail("generation_failed", "content policy"),
        terminal_lease_until=1_700_000_400,
        notified_at="2026-01-01T00:05:00+00:00",
        parked_at="2026-01-01T00:05:01+00:00",
        redrivable="submitted",
    )

    # When / Then it survives encoding as an item and decoding again
    item = record.to_item()
    assert item["pk"] == {"S": "job#fox-1"}
    assert JobRecord.from_item(item) == record


def test_record_status_shows_the_stage_until_the_outcome_is_published() -> None:
    # Given a running job whose failure notification is claimed but not yet published
    claimed = JobRecord(job_id="j", stage=Stage.RUNNING, terminal_status=Outcome.FAILED)

    # When / Then a user still sees it running, and sees the outcome once it is published
    assert claimed.status == "running" and not claimed.terminal
    published = JobRecord.from_item({**claimed.to_item(), "notified_at": {"S": "now"}})
    assert published.status == "failed" and published.terminal


def test_record_reads_an_item_written_before_stage_and_outcome_were_apart() -> None:
    # Given an older item whose `state` was overwritten with the outcome
    item = {
        "pk": {"S": "job#old-1"},
        "state": {"S": "completed"},
        "terminal_status": {"S": "completed"},
        "notified_at": {"S": "2025-12-01T00:00:00+00:00"},
    }

    # When / Then it reads as a completed job
    record = JobRecord.from_item(item)
    assert (record.job_id, record.status, record.stage) == ("old-1", "completed", None)


def test_workflow_state_round_trips_through_the_step_functions_payload() -> None:
    # Given the execution input submit builds
    summary = JobSummary(
        job_id="fox-1",
        input={"prompt": "a fox", "duration": 10},
        source={"type": "sqs"},
        metadata={"k": 1},
        prompt_enhancement={"status": "applied", "enhanced_prompt": "a fox, dusk"},
    )
    state = WorkflowState.start(summary, "pred-1", PollSchedule(), now=1_700_000_000.0)

    # When it travels as JSON, through a completed poll and a stored delivery
    later = state.with_poll(Poll(status="completed", polls=3, outputs=("https://x/1.mp4",)))
    later = WorkflowState(**{**later.__dict__, "delivery": Delivery("stored", ("s3://b/k",), 9)})
    again = WorkflowState.from_dict(json.loads(json.dumps(later.to_dict())))

    # Then nothing is lost, and the first wait is the schedule's
    assert again == later
    assert state.poll.wait_seconds == PollSchedule().first_wait_s
    # ... the queue bound counts from the submit, the generation deadline from processing
    assert state.schedule.deadline(None) == 1_700_000_000.0 + PollSchedule().queued_deadline_s
    assert state.schedule.deadline(1_700_000_100.0) == 1_700_000_100.0 + PollSchedule().deadline_s
    assert state.to_dict()["delivery"] is None and state.to_dict()["error"] is None


def test_workflow_state_reads_every_events_file_the_tasks_receive() -> None:
    # Given / When the events the poll and finalize tasks are invoked with
    for name in ("poll.json", "finalize-store.json", "finalize-failure.json"):
        state = WorkflowState.from_dict(load_event(name))

        # Then each decodes into the typed state
        assert state.job.job_id == "demo-job-0001"
        assert state.prediction_id == "0123456789abcdef0123456789abcdef"


def test_failure_prefers_the_caught_error_then_the_store_error_then_the_poll_error() -> None:
    # Given a failed poll, a failed store and a caught transient error
    state = WorkflowState.from_dict(load_event("finalize-failure.json"))
    stored = WorkflowState(
        **{**state.__dict__, "delivery": Delivery("failed", error=ErrorDetail("not_mp4", "no"))}
    )
    cause = json.dumps({"errorMessage": str(TransientError("SNS down", code="notify_failed"))})
    caught = WorkflowState(
        **{**stored.__dict__, "caught": {"Error": "TransientError", "Cause": cause}}
    )

    # When / Then each reports the most specific reason
    assert state.failure().code == "generation_failed"
    assert stored.failure().code == "not_mp4"
    assert caught.failure() == ErrorDetail("notify_failed", "SNS down")
