"""Unit tests: a port built on first use whose build fails fails as its port would, and recovers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import EndpointConnectionError, NoRegionError

from kling_pipeline import wiring
from kling_pipeline.errors import TransientError
from kling_pipeline.settings import Settings
from kling_pipeline.submit.admission import Admission
from kling_pipeline.submit.intake import ReceivedMessage
from kling_pipeline.submit.ports import Queue
from kling_pipeline.submit.refusal import Refuser
from kling_pipeline.submit.service import SubmitService
from tests.unit.fakes import (
    FakeApi,
    FakeLedger,
    FakeNotifier,
    FakePromptFiles,
    FakeQueue,
    FakeWorkflows,
    fake_signer,
)

#: What building a boto3-backed port can raise: a client error, an unexpected one.
BUILD_ERRORS: tuple[Exception, ...] = (
    NoRegionError(),
    EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com"),
    KeyError("JOB_QUEUE_URL"),
    AttributeError("'NoneType' object has no attribute 'client'"),
)


@dataclass
class FlakyBuild:
    """Builds the queue, failing the first `failures` times with `error`."""

    error: Exception
    failures: int = 1
    queue: FakeQueue = field(default_factory=FakeQueue)
    calls: int = 0

    def __call__(self) -> FakeQueue:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.queue


@pytest.mark.parametrize("error", BUILD_ERRORS, ids=lambda e: type(e).__name__)
def test_port_fails_transiently_then_builds_when_first_build_raises(error: Exception) -> None:
    # Given a port whose first build raises
    build = FlakyBuild(error)
    port = wiring.on_first_use(build)

    # When a record uses it, then the next record does
    with pytest.raises(TransientError) as caught:
        port.retry_later("rh-1", 0)
    port.retry_later("rh-2", 0)

    # Then the first use failed as a port's transient failure, naming the cause, and the
    # build was tried again: the port works, built once
    assert type(error).__name__ in caught.value.message
    assert build.calls == 2
    assert build.queue.delays == [("rh-2", 0)]


def rejected_message(receive_count: int) -> ReceivedMessage:
    body = json.dumps({"prompt": "   ", "job_id": "job-empty"})  # refused: no prompt
    return ReceivedMessage(
        body=body,
        receipt_handle=f"rh-{receive_count}",
        receive_count=receive_count,
        message_id="m-1",
    )


@pytest.mark.parametrize("error", BUILD_ERRORS, ids=lambda e: type(e).__name__)
def test_refused_message_is_parked_when_queue_build_failed_on_first_delivery(
    error: Exception,
) -> None:
    # Given a submit service whose queue port fails to build the first time it is used
    ledger, build = FakeLedger(), FlakyBuild(error)
    queue: Queue = wiring.on_first_use(build)
    notifier = FakeNotifier(ledger)
    settings = Settings()
    submit = SubmitService(
        settings,
        admission=Admission(settings, ledger=ledger, api=FakeApi(), workflows=FakeWorkflows()),
        refuser=Refuser(ledger=ledger, notifier=notifier, queue=queue, signer=fake_signer()),
        ledger=ledger,
        queue=queue,
        prompt_files=FakePromptFiles(),
        signer=fake_signer(),
    )

    # When a message that must be refused is delivered, fails, and is delivered again
    with pytest.raises(TransientError):
        submit.handle_message(rejected_message(1))
    submit.handle_message(rejected_message(2))

    # Then it got one rejection and was parked in the dead-letter queue with its reason,
    # not deleted unparked
    assert [n["status"] for n in notifier.published] == ["rejected"]
    assert len(build.queue.parked) == 1
    assert build.queue.parked[0][1]["error_code"] == "invalid_job"
