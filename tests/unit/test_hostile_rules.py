"""Unit tests: the submit rules against careless and hostile messages, on in-memory fakes."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kling_pipeline.errors import ErrorDetail, PermanentError, TransientError
from kling_pipeline.job.notification import Notification
from kling_pipeline.job.prompt_file import PromptFileRejected
from kling_pipeline.job.record import Stage
from kling_pipeline.job.request import message_job_id
from kling_pipeline.notify import MAX_MESSAGE_BYTES, notification_message
from kling_pipeline.observability import logger
from kling_pipeline.redact import forget_secrets, register_secret
from kling_pipeline.settings import Settings
from kling_pipeline.submit.aws import S3PromptFiles
from kling_pipeline.submit.intake import FileFanOut, PromptUpload, ReceivedMessage, take_in
from kling_pipeline.submit.refusal import Refusal, Refuser
from kling_pipeline.submit.signing import SIGNATURE_ATTRIBUTE, AttributeSigner
from tests.unit.fakes import fake_signer
from tests.unit.test_submit_rules import Harness, job

SECRET = "wsk-live-0123456789abcdefSECRET"


def deliver(h: Harness, message: ReceivedMessage, time_left: float = float("inf")) -> None:
    h.service.handle_message(message, lambda: time_left)


# ------------------------------------------------------------------------------ job-id conflicts


def test_paid_job_keeps_its_record_and_notification_when_an_invalid_message_reuses_its_id() -> None:
    # Given a paid, running job
    h = Harness()
    h.deliver(job(job_id="koi-1"), message_id="a")
    before = h.ledger.records["koi-1"]

    # When an invalid message arrives under the same job id
    h.deliver(job(job_id="koi-1", duration=7), message_id="b")

    # Then nothing is published, the record is unchanged, the message is parked as a conflict
    assert h.notifier.published == []
    assert h.ledger.records["koi-1"] == before
    [(body, attributes)] = h.queue.parked
    assert attributes["error_code"] == "job_id_conflict" and "koi-1" in attributes["reason"]
    assert "job_id" not in attributes  # a redrive of it would not be taken for that job


def test_different_valid_request_is_parked_not_paid_when_its_job_id_was_paid() -> None:
    # Given a paid job
    h = Harness()
    h.deliver(job(job_id="koi-2"), message_id="a")

    # When a different valid request reuses its id, and the first is delivered again
    h.deliver(json.dumps({"prompt": "a different video", "job_id": "koi-2"}), message_id="b")
    h.deliver(job(job_id="koi-2"), message_id="c")

    # Then one POST; the different one parked as a conflict; the duplicate ignored silently
    assert len(h.api.posts) == 1
    assert [a["error_code"] for _, a in h.queue.parked] == ["job_id_conflict"]
    assert h.ledger.records["koi-2"].stage is Stage.RUNNING


def test_rejected_job_id_runs_when_the_corrected_message_is_sent_again() -> None:
    # Given a message rejected for its duration
    h = Harness()
    h.deliver(job(job_id="fix-1", duration=7), message_id="a")
    assert h.statuses() == [("fix-1", "rejected")]

    # When the corrected message is sent under the same job id
    h.deliver(job(job_id="fix-1"), message_id="b")

    # Then it is paid once and its workflow runs
    assert len(h.api.posts) == 1
    assert h.ledger.records["fix-1"].stage is Stage.RUNNING


def test_rejected_job_id_gets_a_new_rejection_when_a_different_invalid_message_reuses_it() -> None:
    # Given a rejected job id
    h = Harness()
    h.deliver(job(job_id="fix-2", duration=7), message_id="a")

    # When a different invalid message and then the first one again are sent under it
    h.deliver(job(job_id="fix-2", aspect_ratio="4:3"), message_id="b")
    h.deliver(job(job_id="fix-2", aspect_ratio="4:3"), message_id="c")

    # Then each distinct message gets its one rejection; the repeat is a duplicate delivery
    assert h.statuses() == [("fix-2", "rejected"), ("fix-2", "rejected")]
    assert [n["error"]["field"] for n in h.notifier.published] == ["duration", "aspect_ratio"]
    assert h.api.posts == []


# ------------------------------------------------------------------------------ identity


def test_redriven_message_without_job_id_is_the_same_job_under_a_new_message_id() -> None:
    # Given a job without job_id that was paid for
    h = Harness()
    body = job()
    h.deliver(body, message_id="first")

    # When SQS parks and a redrive returns it under a new message id, with no attributes
    h.deliver(body, message_id="after-redrive")

    # Then it is one job: one POST, under the id its body derives
    assert len(h.api.posts) == 1
    assert list(h.workflows.started) == [message_job_id(body)]


def test_forged_internal_attributes_are_ignored_when_unsigned_or_badly_signed() -> None:
    # Given messages carrying a job_id / kp-source attribute an outside sender wrote
    signer = fake_signer()
    body = "a fox"
    source = json.dumps({"type": "s3", "bucket": "b", "key": "prompts/x.txt"})
    internal = {"job_id": "koi-1", "kp-source": source}
    forged = [
        internal,
        {**internal, SIGNATURE_ATTRIBUTE: "00" * 32},
        fake_signer("another-key-0123456789").sign(body, internal),
        signer.sign("another body", internal),
    ]

    # When each is verified / Then none is trusted
    for attributes in forged:
        assert signer.verified(body, attributes, ("job_id", "kp-source")) == {}
    # ... while the pipeline's own signature holds
    assert signer.verified(body, signer.sign(body, internal), ("job_id", "kp-source")) == internal


def test_parked_message_is_signed_so_its_redrive_is_recognised() -> None:
    # Given a job refused for the budget, parked in the DLQ
    h = Harness(settings=Settings(daily_budget_usd=0.5))
    body = job(job_id="redrive-1")
    h.deliver(body)
    [(parked, attributes)] = h.queue.parked

    # When its attributes are verified as a redrive would be
    verified = fake_signer().verified(parked, attributes, ("job_id", "kp-source"))

    # Then the job id it was parked under is trusted
    assert verified == {"job_id": "redrive-1"}


# ------------------------------------------------------------------------------ timeout guard


def test_no_paid_post_starts_when_the_invocation_has_too_little_time_left() -> None:
    # Given a job and an invocation with 20 s left (a submit may take 30 s + margin)
    h = Harness()

    # When it is handled
    with pytest.raises(TransientError) as caught:
        deliver(
            h, ReceivedMessage(message_id="m", body=job(job_id="late-1"), receipt_handle="rh"), 20
        )

    # Then nothing was claimed or paid, and the message comes back at once
    assert caught.value.code == "not_started"
    assert h.api.posts == [] and "late-1" not in h.ledger.records
    assert h.queue.delays == [("rh", 0)]


def test_paid_post_starts_when_the_invocation_has_time_for_it() -> None:
    # Given / When a job handled with two minutes left / Then it is paid once
    h = Harness()
    deliver(h, ReceivedMessage(message_id="m", body=job(job_id="ok-1")), 120)
    assert len(h.api.posts) == 1


# ------------------------------------------------------------------------------ optimizer


@pytest.mark.parametrize("answer", ["", "   \u200b ", "x" * 5000, ["a list"], 42])
def test_original_prompt_is_submitted_when_the_optimizer_answer_is_unusable(
    answer: object,
) -> None:
    # Given an optimizer answering something that is not a usable prompt
    h = Harness()
    h.api.enhance_answer = answer

    # When a job asking for enhancement is delivered
    h.deliver(job(job_id="enh-1", enhance_prompt=True))

    # Then the original prompt is paid for, and the workflow records the fallback
    assert [p["prompt"] for p in h.api.posts] == ["a red fox in the snow"]
    enhancement = h.workflows.started["enh-1"].job.prompt_enhancement
    assert enhancement is not None and enhancement["status"] == "failed"


# ------------------------------------------------------------------------------ intake shapes


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"prompt": "a fox", "Records": []}),
        json.dumps({"prompt": "a fox", "Event": "s3:TestEvent"}),
        json.dumps({"Records": []}),
        json.dumps({"Records": [{"eventSource": "aws:s3"}]}),
        json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {}, "object": {}}}]}),
    ],
)
def test_body_is_a_refused_job_not_a_swallowed_event_when_not_a_well_formed_s3_event(
    body: str,
) -> None:
    # Given / When a body that only looks like an S3 event / Then it is a refused job message
    intake = take_in(ReceivedMessage(message_id="m", body=body))
    assert isinstance(intake, Refusal)


@pytest.mark.parametrize("prompt", ["\u200b\u200c\u200d", "\ufeff\u2060", " \u00ad\u200e "])
def test_prompt_is_rejected_when_it_holds_no_visible_character(prompt: str) -> None:
    # Given / When a prompt of zero-width and format characters only
    h = Harness()
    h.deliver(json.dumps({"prompt": prompt, "job_id": "ghost-1"}))

    # Then it is rejected, never paid
    assert h.statuses() == [("ghost-1", "rejected")]
    assert h.api.posts == []


def test_folder_marker_is_ignored_and_a_foreign_bucket_refused_when_events_name_them() -> None:
    # Given the prompts bucket configured, a folder marker and an event for another bucket
    h = Harness(settings=Settings(prompts_bucket="prompts-bucket"))

    def event(bucket: str, key: str, size: int) -> str:
        obj = {"key": key, "size": size, "versionId": "v1"}
        record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": bucket}, "object": obj}}
        return json.dumps({"Records": [record]})

    # When both are delivered
    h.deliver(event("prompts-bucket", "prompts/", 0), message_id="a")
    h.deliver(event("someone-elses", "prompts/jobs.txt", 10), message_id="b")

    # Then the folder is silent; the foreign file gets one rejection with a reason; none read
    assert [n["error"]["code"] for n in h.notifier.published] == ["prompt_file_rejected"]
    assert (
        "not under the pipeline's prompts location" in h.notifier.published[0]["error"]["message"]
    )
    assert h.queue.queued == [] and h.api.posts == []


def test_one_parse_bomb_line_is_rejected_alone_when_the_file_holds_valid_lines() -> None:
    # Given a prompt file whose middle line is a 5,000-digit number
    h = Harness()
    data = b'{"prompt": "a"}\n{"prompt": "b", "duration": 5' + b"0" * 5000 + b'}\n{"prompt": "c"}\n'
    h.files.files["prompts/bomb.jsonl"] = data
    obj = {"key": "prompts/bomb.jsonl", "size": len(data), "versionId": "v1"}
    record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": obj}}

    # When the upload event is handled
    h.deliver(json.dumps({"Records": [record]}))

    # Then two lines are queued and the bomb line alone is rejected, naming its line
    assert len(h.queue.queued) == 2
    [rejection] = h.notifier.published
    assert rejection["source"]["line"] == 2 and "digits" in rejection["error"]["message"]


def test_s3_event_names_its_version_and_the_marker_follows_it() -> None:
    # Given an event of a versioned bucket
    obj = {"key": "prompts/a.jsonl", "size": 3, "versionId": "v2", "sequencer": "0A", "eTag": "e"}
    record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": obj}}

    # When taken in / Then the upload is read at that version and its job ids follow it
    intake = take_in(ReceivedMessage(message_id="m", body=json.dumps({"Records": [record]})))
    assert isinstance(intake, FileFanOut)
    [upload] = intake.uploads
    assert (upload.version_id, upload.marker) == ("v2", "v2")


class _S3:
    """An S3 client whose get_object fails the way production S3 does."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.requests: list[dict[str, Any]] = []

    def get_object(self, **request: Any) -> Any:
        self.requests.append(request)
        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "GetObject")


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchVersion", "AccessDenied", "InvalidArgument"])
def test_prompt_file_is_refused_with_a_reason_when_s3_says_it_is_gone(code: str) -> None:
    # Given a file S3 reports gone (AccessDenied: no s3:ListBucket, so a missing key reads so)
    s3 = _S3(code)
    files = S3PromptFiles(s3, 1000)  # type: ignore[arg-type]

    # When it is read at the version its event names / Then it is refused, not retried
    with pytest.raises(PromptFileRejected):
        files.read(PromptUpload("b", "prompts/x.txt", version_id="v9", size=5))
    assert s3.requests[0]["VersionId"] == "v9"


def test_prompt_file_read_is_retried_when_s3_fails_transiently() -> None:
    # Given / When S3 answers a server error / Then the read is retried later
    with pytest.raises(TransientError):
        S3PromptFiles(_S3("InternalError"), 1000).read(  # type: ignore[arg-type]
            PromptUpload("b", "prompts/x.txt", version_id="v1", size=5)
        )


# ------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize(
    "echo",
    [
        {"prompt": "x" * 300_000},
        {"k" * 90_000: "v", "k" * 90_001: "v", "k" * 90_002: "v"},
        {"metadata": [["deep"] * 100] * 100},
        {"list": list(range(100_000))},
    ],
)
def test_notification_stays_under_the_sns_limit_when_the_echo_is_oversized(echo: Any) -> None:
    # Given a rejection echoing an oversized input, with a huge error message
    error = ErrorDetail("invalid_job", "e" * 300_000, field="k" * 90_000)
    note = Notification(job_id="big-1", status="rejected", input=echo, source={}, error=error)

    # When its SNS message is built
    message = notification_message(note)

    # Then it is valid JSON under the limit, still naming the job and its status
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    decoded = json.loads(message)
    assert (decoded["job_id"], decoded["status"]) == ("big-1", "rejected")


def test_secret_is_masked_in_notifications_reasons_and_logs_when_an_api_error_echoes_it() -> None:
    # Given the API key registered and an API error that echoes the Authorization header
    register_secret(SECRET)
    try:
        echoed = f"bad request; headers: Authorization: Bearer {SECRET}"
        note = Notification(
            job_id="leak-1",
            status="failed",
            input={"prompt": "a fox"},
            source={},
            error=ErrorDetail("api_rejected", echoed),
        )
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logger.registered_formatter)
        logging.getLogger(logger.service).addHandler(handler)

        # When the notification is built and the error is logged
        message = notification_message(note)
        logger.warning("submit failed", extra={"error": echoed})
        logging.getLogger(logger.service).removeHandler(handler)

        # Then the key appears in neither
        assert SECRET not in message and "[redacted]" in message
        assert SECRET not in stream.getvalue() and "[redacted]" in stream.getvalue()
    finally:
        forget_secrets()


def test_dlq_reason_is_redacted_when_the_refusal_quotes_a_secret() -> None:
    # Given a refusal whose API error quotes the key
    register_secret(SECRET)
    try:
        h = Harness()
        h.api.fail_with = PermanentError(f"HTTP 400: invalid key {SECRET}", code="api_rejected")

        # When the job is refused and parked
        h.deliver(job(job_id="leak-2"))

        # Then the DLQ reason masks it (the notification is masked by the SNS notifier)
        [(_, attributes)] = h.queue.parked
        assert SECRET not in attributes["reason"] and "[redacted]" in attributes["reason"]
    finally:
        forget_secrets()


def test_signer_trusts_nothing_when_the_key_cannot_be_read() -> None:
    # Given a signer whose key source fails
    def broken() -> str:
        raise RuntimeError("secrets manager down")

    signer = AttributeSigner(broken)

    # When signing and verifying / Then nothing is signed and nothing verifies
    assert signer.sign("b", {"job_id": "x"}) == {}
    assert signer.verified("b", {"job_id": "x", SIGNATURE_ATTRIBUTE: "ab"}, ("job_id",)) == {}


class _UnreadableFiles:
    """A prompts bucket that fails every read with a server error."""

    def read(self, upload: PromptUpload) -> bytes:
        raise TransientError("could not read it: InternalError")


def test_unreadable_prompt_file_ends_in_a_failed_notification_on_its_last_receive() -> None:
    # Given a prompt file S3 fails to serve, and its event on its last allowed receive
    h = Harness()
    h.service = type(h.service)(
        h.settings,
        admission=h.admission,
        refuser=Refuser(ledger=h.ledger, notifier=h.notifier, queue=h.queue, signer=fake_signer()),
        ledger=h.ledger,
        queue=h.queue,
        prompt_files=_UnreadableFiles(),
        signer=fake_signer(),
    )
    obj = {"key": "prompts/a.jsonl", "size": 10, "versionId": "v1"}
    record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": obj}}
    body = json.dumps({"Records": [record]})

    # When it is delivered before and on the last receive
    with pytest.raises(TransientError):
        h.deliver(body, receive_count=1)
    h.deliver(body, receive_count=h.settings.max_receive_count)

    # Then one failed notification says why, and the event is parked for redrive
    assert [(n["status"], n["error"]["code"]) for n in h.notifier.published] == [
        ("failed", "prompt_file_unreadable")
    ]
    [(_, attributes)] = h.queue.parked
    assert attributes["error_code"] == "prompt_file_unreadable"
