"""Unit tests: a batch's records run side by side through Powertools' batch processor."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)

from kling_pipeline.settings import Settings
from kling_pipeline.submit.admission import Admission
from kling_pipeline.submit.refusal import Refuser
from kling_pipeline.submit.service import SubmitService
from kling_pipeline.types import Json
from tests.conftest import load_event
from tests.unit.fakes import (
    FakeApi,
    FakeLedger,
    FakeNotifier,
    FakePromptFiles,
    FakeQueue,
    FakeWorkflows,
    fake_signer,
)

#: Long enough for any loaded machine to bring the batch's records together; a batch whose
#: records run one after another never does, and its POSTs fail with BrokenBarrierError.
MEET_TIMEOUT_S = 20.0


@dataclass
class MeetingApi(FakeApi):
    """WaveSpeed whose POSTs wait until `parties` of them are in flight at the same time."""

    parties: int = 1
    in_flight: int = 0
    most_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.meeting = threading.Barrier(self.parties, timeout=MEET_TIMEOUT_S)

    def submit_generation(self, payload: Json) -> str:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.meeting.wait()
            with self._lock:
                return super().submit_generation(payload)
        finally:
            with self._lock:
                self.in_flight -= 1


def service(settings: Settings, api: FakeApi) -> SubmitService:
    ledger, queue = FakeLedger(), FakeQueue()
    return SubmitService(
        settings,
        admission=Admission(settings, ledger=ledger, api=api, workflows=FakeWorkflows()),
        refuser=Refuser(
            ledger=ledger, notifier=FakeNotifier(ledger), queue=queue, signer=fake_signer()
        ),
        ledger=ledger,
        queue=queue,
        prompt_files=FakePromptFiles(),
        signer=fake_signer(),
    )


def batch(size: int) -> dict[str, Any]:
    """`size` new jobs in the SQS record shape of the `sam local invoke` event."""
    template = load_event("submit-sqs-job.json")["Records"][0]
    return {
        "Records": [
            {
                **template,
                "messageId": f"m-{n}",
                "body": json.dumps({"prompt": f"job {n}: a paper boat in the rain"}),
            }
            for n in range(size)
        ]
    }


def run_batch(submit: SubmitService, event: dict[str, Any]) -> list[object]:
    """The message ids the handler reports failed, as the submit function runs a batch."""
    response = async_process_partial_response(
        event=event,
        record_handler=submit.record_handler(),
        processor=AsyncBatchProcessor(
            event_type=EventType.SQS, raise_on_entire_batch_failure=False
        ),
    )
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def test_batch_submits_every_record_at_once_when_concurrency_covers_the_batch() -> None:
    # Given a 10-record batch, a concurrency of 10 and an API that answers a POST only once
    # all ten are in flight (more records than asyncio's default pool has threads on 2 CPUs)
    api = MeetingApi(parties=10)
    submit = service(Settings(submit_concurrency=10), api)

    # When the batch is processed
    failed = run_batch(submit, batch(10))

    # Then every record was paid for, all ten side by side, and none failed
    assert failed == []
    assert len(api.posts) == 10
    assert api.most_in_flight == 10


def test_batch_submits_at_most_the_concurrency_when_the_batch_is_larger() -> None:
    # Given a 9-record batch, a concurrency of 3, and POSTs that go out in threes
    api = MeetingApi(parties=3)
    submit = service(Settings(submit_concurrency=3), api)

    # When the batch is processed
    failed = run_batch(submit, batch(9))

    # Then every record was paid for, never more than three at once
    assert failed == []
    assert len(api.posts) == 9
    assert api.most_in_flight == 3
