"""Unit tests: intake, admission and refusal rules against in-memory fakes of their ports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest

from kling_pipeline.errors import PermanentError, SubmitOutcomeUnknown, TransientError
from kling_pipeline.job.prompt_file import parse_prompt_file
from kling_pipeline.job.record import Outcome, Stage
from kling_pipeline.job.request import message_job_id, parse_message_body
from kling_pipeline.settings import Settings
from kling_pipeline.submit.admission import Admission
from kling_pipeline.submit.intake import (
    Admit,
    FileFanOut,
    PromptUpload,
    ReceivedMessage,
    plan_file,
    take_in,
)
from kling_pipeline.submit.refusal import Refusal, Refuser
from kling_pipeline.submit.service import SubmitService
from kling_pipeline.wavespeed import ThrottledSubmit
from tests.unit.fakes import (
    FakeApi,
    FakeLedger,
    FakeNotifier,
    FakePromptFiles,
    FakeQueue,
    FakeWorkflows,
    fake_signer,
)

SOURCE = {"type": "sqs", "message_id": "m-1"}


@dataclass
class Harness:
    """The submit function's rules wired to fakes."""

    settings: Settings = field(default_factory=Settings)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    api: FakeApi = field(default_factory=FakeApi)
    queue: FakeQueue = field(default_factory=FakeQueue)
    workflows: FakeWorkflows = field(default_factory=FakeWorkflows)
    files: FakePromptFiles = field(default_factory=FakePromptFiles)

    def __post_init__(self) -> None:
        self.notifier = FakeNotifier(self.ledger)
        self.admission = Admission(
            self.settings, ledger=self.ledger, api=self.api, workflows=self.workflows
        )
        self.service = SubmitService(
            self.settings,
            admission=self.admission,
            refuser=Refuser(
                ledger=self.ledger, notifier=self.notifier, queue=self.queue, signer=fake_signer()
            ),
            ledger=self.ledger,
            queue=self.queue,
            prompt_files=self.files,
            signer=fake_signer(),
        )

    def deliver(self, body: str, *, message_id: str = "m-1", receive_count: int = 1) -> None:
        self.service.handle_message(
            ReceivedMessage(
                message_id=message_id,
                body=body,
                receipt_handle=f"rh-{message_id}",
                receive_count=receive_count,
            )
        )

    def stage(self, job_id: str) -> Stage | None:
        record = self.ledger.get(job_id)
        return record.stage if record is not None else None

    def statuses(self) -> list[tuple[str, str]]:
        return [(n["job_id"], n["status"]) for n in self.notifier.published]


def job(**fields: object) -> str:
    return json.dumps({"prompt": "a red fox in the snow", **fields})


# ------------------------------------------------------------------------------ intake


def test_intake_admits_a_plain_text_prompt_under_an_id_derived_from_its_body() -> None:
    # Given / When a plain-text body arrives
    intake = take_in(ReceivedMessage(message_id="abc", body="A lighthouse in a storm"))

    # Then it is a job with all defaults, named after its content (not its message id)
    assert isinstance(intake, Admit)
    assert intake.job.job_id == message_job_id("A lighthouse in a storm")
    assert intake.job.job_id.startswith("msg-") and "abc" not in intake.job.job_id
    assert intake.job.input["prompt"] == "A lighthouse in a storm"
    assert intake.source == {"type": "sqs", "message_id": "abc"}
    assert not intake.redriven


def test_intake_refuses_an_invalid_job_under_its_requested_id_naming_the_field() -> None:
    # Given / When a job breaking the duration rule arrives
    intake = take_in(ReceivedMessage(message_id="m", body=job(duration=7, job_id="bad-1")))

    # Then it is a rejection under the id it asked for, naming the field, echoing the input
    assert isinstance(intake, Refusal)
    assert (intake.job_id, intake.status) == ("bad-1", Outcome.REJECTED)
    assert (intake.error.code, intake.error.field) == ("invalid_job", "duration")
    assert intake.input["duration"] == 7


def test_intake_keeps_the_parked_job_id_when_a_message_is_redriven() -> None:
    # Given a message without a job_id, redriven from the DLQ under the id it was parked as
    message = ReceivedMessage(message_id="new-id", body="a fox", parked_job_id="msg-old-id")

    # When taking it in / Then it is the same job, marked as redriven
    intake = take_in(message)
    assert isinstance(intake, Admit)
    assert intake.job.job_id == "msg-old-id" and intake.redriven


def test_intake_fans_out_each_named_file_when_given_an_s3_event() -> None:
    # Given an S3 notification naming an URL-encoded key with a sequencer
    record = {
        "eventSource": "aws:s3",
        "s3": {
            "bucket": {"name": "prompts-bucket"},
            "object": {"key": "prompts/launch+teasers.jsonl", "size": 31, "sequencer": "0A1"},
        },
    }

    # When taking it in
    intake = take_in(ReceivedMessage(message_id="m", body=json.dumps({"Records": [record]})))

    # Then the file is named decoded, with the marker that makes its job ids
    assert intake == FileFanOut(
        (PromptUpload("prompts-bucket", "prompts/launch teasers.jsonl", sequencer="0A1", size=31),)
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps({"Event": "s3:TestEvent", "Service": "Amazon S3"}), FileFanOut(())),
        (json.dumps({"Records": [{"eventSource": "aws:sqs"}]}), "Records"),
    ],
)
def test_intake_tells_s3_events_from_jobs_by_their_shape(body: str, expected: object) -> None:
    # Given S3's test event, and a job object that only looks like an event
    # When taking each in
    intake = take_in(ReceivedMessage(message_id="m", body=body))

    # Then the test event fans out nothing; the look-alike is a job refused for its field
    if isinstance(expected, FileFanOut):
        assert intake == expected
    else:
        assert isinstance(intake, Refusal) and intake.error.field == expected


def test_file_plan_queues_valid_lines_and_refuses_the_invalid_one_naming_its_line() -> None:
    # Given a three-line prompt file whose second line is invalid
    data = b'{"prompt": "a"}\n{"prompt": "b", "duration": 3}\n{"prompt": "c", "job_id": "c-1"}\n'
    upload = PromptUpload("bucket", "in/jobs.jsonl", sequencer="seq-1", size=len(data))
    entries = parse_prompt_file(upload.key, data, max_bytes=10_000, max_jobs=10)

    # When planning it
    plan = plan_file(upload, entries)

    # Then two messages are queued with their line as source, one line is refused
    bodies = [json.loads(body) for body, _ in plan.messages]
    sources = [json.loads(attrs["kp-source"]) for _, attrs in plan.messages]
    assert [b["prompt"] for b in bodies] == ["a", "c"]
    assert bodies[1]["job_id"] == "c-1" and bodies[0]["job_id"].startswith("file-")
    assert [s["line"] for s in sources] == [1, 3]
    [refusal] = plan.refusals
    assert refusal.source["line"] == 2
    assert refusal.error.message.startswith("in/jobs.jsonl line 2: duration:")


# ------------------------------------------------------------------------------ admission


def test_admission_posts_once_when_the_same_job_arrives_twice() -> None:
    # Given a harness
    h = Harness()

    # When the same job message is delivered twice
    h.deliver(job(job_id="koi-1"), message_id="a")
    h.deliver(job(job_id="koi-1"), message_id="b")

    # Then one paid POST, one workflow, no notification yet, nothing parked
    assert len(h.api.posts) == 1
    assert list(h.workflows.started) == ["koi-1"]
    assert h.ledger.records["koi-1"].stage is Stage.RUNNING
    assert h.notifier.published == [] and h.queue.parked == []


def test_admission_starts_the_stored_workflow_without_a_post_when_the_start_failed() -> None:
    # Given a job whose paid POST went through but whose workflow could not be started
    h = Harness()
    h.workflows.fail_next = True
    with pytest.raises(TransientError):
        h.admission.admit(parse_message_body(job(job_id="lantern-1")).identified("x"), SOURCE)
    assert h.stage("lantern-1") is Stage.SUBMITTED

    # When the message is delivered again
    h.deliver(job(job_id="lantern-1"))

    # Then the stored workflow starts with the stored prediction, and nothing is paid again
    assert len(h.api.posts) == 1
    assert h.workflows.started["lantern-1"].prediction_id == "pred-1"
    assert h.stage("lantern-1") is Stage.RUNNING


def test_admission_releases_the_claim_and_budget_when_the_post_is_provably_refused() -> None:
    # Given a capped budget and an API answering 429 to every POST
    h = Harness(settings=Settings(daily_budget_usd=5.0))
    h.api.fail_with = ThrottledSubmit("429", code="rate_limited")

    # When admitting a job
    with pytest.raises(TransientError):
        h.admission.admit(parse_message_body(job()).identified("busy-1"), SOURCE)

    # Then nothing is held: no record, no spend, so a redelivery can try again
    assert "busy-1" not in h.ledger.records
    assert sum(h.ledger.spent.values()) == pytest.approx(0.0)


def test_admission_never_posts_again_when_an_earlier_attempt_stopped_mid_submit() -> None:
    # Given a claim whose holder stopped while submitting (its lease ran out)
    h = Harness()
    h.ledger.claim_submission("lost-1", lease_s=-10, job={}, source=SOURCE)

    # When the job arrives again / Then the outcome is unknown, and no POST is sent
    with pytest.raises(SubmitOutcomeUnknown) as caught:
        h.admission.admit(parse_message_body(job()).identified("lost-1"), SOURCE)
    assert "dashboard" in caught.value.message
    assert h.api.posts == []


def test_admission_asks_for_a_retry_when_another_delivery_is_submitting() -> None:
    # Given a live claim of another delivery
    h = Harness()
    h.ledger.claim_submission("twin-1", lease_s=300, job={}, source=SOURCE)

    # When the job arrives again / Then it is retried later, not submitted
    with pytest.raises(TransientError) as caught:
        h.admission.admit(parse_message_body(job()).identified("twin-1"), SOURCE)
    assert caught.value.code == "in_progress"
    assert h.api.posts == []


def test_admission_submits_the_original_prompt_when_the_optimizer_fails() -> None:
    # Given a job asking for enhancement and an optimizer that fails
    h = Harness()
    h.api.enhance_error = PermanentError("optimizer down")

    # When it is delivered
    h.deliver(job(job_id="plain-1", enhance_prompt=True))

    # Then the original prompt is paid for and the workflow says why
    assert h.api.posts[0]["prompt"] == "a red fox in the snow"
    enhancement = h.workflows.started["plain-1"].job.prompt_enhancement
    assert enhancement is not None and enhancement["status"] == "failed"


# ------------------------------------------------------------------------------ refusal


def test_invalid_job_is_rejected_and_parked_once_when_delivered_twice() -> None:
    # Given the same invalid message delivered twice
    h = Harness()
    body = job(duration=7, job_id="twice-bad")

    # When both deliveries are handled
    h.deliver(body, message_id="a")
    h.deliver(body, message_id="b")

    # Then one rejection, parked once with its reason, nothing paid
    assert h.statuses() == [("twice-bad", "rejected")]
    [(parked_body, attributes)] = h.queue.parked
    assert parked_body == body
    assert attributes["error_code"] == "invalid_job" and "duration" in attributes["reason"]
    assert attributes["job_id"] == "twice-bad"
    assert h.notifier.published[0]["cost"] == {
        "wavespeed_usd": 0.0,
        "currency": "USD",
        "paid": False,
    }
    assert h.api.posts == []


def test_budget_refusal_is_failed_parked_and_redrivable_from_scratch() -> None:
    # Given a $1.30 cap and two $1.30 jobs
    h = Harness(settings=Settings(daily_budget_usd=1.3))

    # When both are delivered
    h.deliver(job(job_id="b-1"))
    h.deliver(job(job_id="b-2"))

    # Then the second fails with budget_exceeded, is parked, and a redrive may run it
    assert h.statuses() == [("b-2", "failed")]
    assert h.notifier.published[0]["error"]["code"] == "budget_exceeded"
    assert [attrs["job_id"] for _, attrs in h.queue.parked] == ["b-2"]
    assert h.ledger.records["b-2"].redrivable == "new"
    assert len(h.api.posts) == 1


def test_transient_failure_delays_the_message_then_settles_it_on_the_last_receive() -> None:
    # Given an API that cannot be reached, and two receives allowed
    h = Harness(settings=Settings(max_receive_count=2, retry_base_s=30))
    h.api.fail_with = ThrottledSubmit("unreachable", code="api_unreachable")

    # When the first receive fails, it is delayed and retried by SQS
    with pytest.raises(TransientError):
        h.deliver(job(job_id="u-1"), receive_count=1)
    [(handle, delay)] = h.queue.delays
    assert handle == "rh-m-1" and 30 <= delay <= 60

    # When the last receive fails too, the job is settled: one failed notification, parked
    h.deliver(job(job_id="u-1"), receive_count=2)
    assert h.statuses() == [("u-1", "failed")]
    note = h.notifier.published[0]
    assert note["error"]["code"] == "retries_exhausted"
    assert "after 2 attempts" in note["error"]["message"]
    assert note["cost"]["paid"] is False
    assert len(h.queue.parked) == 1
    assert h.ledger.records["u-1"].redrivable == "new"


def test_park_failure_releases_the_park_claim_and_asks_for_a_retry() -> None:
    # Given a dead-letter queue that refuses the message
    h = Harness()
    h.queue.park_fails = True

    # When an invalid message is refused / Then the delivery is retried, and may park later
    with pytest.raises(TransientError):
        h.deliver(job(duration=7, job_id="p-1"))
    assert h.ledger.records["p-1"].parked_at is None
    h.queue.park_fails = False
    h.deliver(job(duration=7, job_id="p-1"))
    assert len(h.queue.parked) == 1
    assert h.statuses() == [("p-1", "rejected")]


def test_record_keeps_the_terminal_error_when_a_refusal_is_notified() -> None:
    # Given / When an invalid job is refused
    h = Harness()
    h.deliver(job(aspect_ratio="4:3", job_id="ar-1"))

    # Then the record shows the outcome and its error, as the CLI reads them
    record = h.ledger.records["ar-1"]
    assert record.status == "rejected"
    assert record.terminal_error is not None
    assert (record.terminal_error.code, record.terminal_error.field) == (
        "invalid_job",
        "aspect_ratio",
    )
    # ... and a job refused before any claim shows its outcome even before it is notified
    assert replace(record, notified_at=None).status == "rejected"
