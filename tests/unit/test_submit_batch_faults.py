"""Unit tests: a submit batch whose records fail in every way still reports each record as it ended.

Batches are generated (seeded) from classes of record outcome: paid, refused by the API, a
transient API error, an unexpected exception before or after the paid POST, a time guard that
trips part-way through the batch. The invariants are the ones money depends on: each record is
reported exactly as its outcome, one POST at most per job id (redeliveries included), and no
thread of the batch outlives the invocation.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)

from kling_pipeline.errors import PermanentError, TransientError
from kling_pipeline.settings import Settings
from kling_pipeline.submit.admission import SUBMIT_MARGIN_S, Admission
from kling_pipeline.submit.refusal import Refuser
from kling_pipeline.submit.service import SubmitService
from kling_pipeline.types import Json
from tests.conftest import load_event
from tests.unit.fakes import (
    FakeLedger,
    FakeNotifier,
    FakePromptFiles,
    FakeQueue,
    FakeWorkflows,
    fake_signer,
)

SETTINGS = Settings(submit_concurrency=3, submit_timeout_s=30.0)
#: Seconds the time guard asks for before a paid POST (no prompt enhancement).
NEEDED_S = SETTINGS.submit_timeout_s + SUBMIT_MARGIN_S
#: What each generated record's POST does; the class is written into its prompt.
KINDS = ("paid", "refused", "transient", "crash_before", "crash_after")
CRASHES: tuple[type[Exception], ...] = (RuntimeError, ValueError, KeyError, OSError)


@dataclass
class ScriptedApi:
    """WaveSpeed whose answer to each POST is the class named in the prompt (thread-safe)."""

    posts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_credentials(self) -> None:
        pass

    def enhance_prompt(self, text: str, style: str = "default") -> str:
        return text

    def submit_generation(self, payload: Json) -> str:
        prompt = str(payload["prompt"])
        kind, _, rest = prompt.partition(":")
        crash = CRASHES[len(rest) % len(CRASHES)]
        if kind == "refused":
            raise PermanentError("the prompt was refused", code="content_refused")
        if kind == "transient":
            raise TransientError("WaveSpeed answered 503", code="http_503")
        if kind == "crash_before":
            raise crash("an unexpected failure before anything was sent")
        with self._lock:
            self.posts[prompt] = self.posts.get(prompt, 0) + 1
            count = self.posts[prompt]
        if kind == "crash_after" and count == 1:
            raise crash("an unexpected failure after the paid POST")
        return f"pred-{prompt}"


@dataclass
class Deadline:
    """A Lambda context whose remaining time runs out after `calls_with_time` reads."""

    calls_with_time: int
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get_remaining_time_in_millis(self) -> int:
        with self._lock:
            self.calls += 1
            left = self.calls <= self.calls_with_time
        return int((NEEDED_S + 60 if left else NEEDED_S - 1) * 1000)


@dataclass
class Pipeline:
    api: ScriptedApi
    ledger: FakeLedger
    queue: FakeQueue
    workflows: FakeWorkflows
    submit: SubmitService


def pipeline(api: ScriptedApi | None = None, settings: Settings = SETTINGS) -> Pipeline:
    api = api or ScriptedApi()
    ledger, queue, workflows = FakeLedger(), FakeQueue(), FakeWorkflows()
    submit = SubmitService(
        settings,
        admission=Admission(settings, ledger=ledger, api=api, workflows=workflows),
        refuser=Refuser(
            ledger=ledger, notifier=FakeNotifier(ledger), queue=queue, signer=fake_signer()
        ),
        ledger=ledger,
        queue=queue,
        prompt_files=FakePromptFiles(),
        signer=fake_signer(),
    )
    return Pipeline(api, ledger, queue, workflows, submit)


def record(message_id: str, prompt: str, receive_count: int = 1) -> dict[str, Any]:
    template = load_event("submit-sqs-job.json")["Records"][0]
    return {
        **template,
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": json.dumps({"prompt": prompt, "job_id": message_id}),
        "attributes": {**template["attributes"], "ApproximateReceiveCount": str(receive_count)},
    }


def generated_batch(rng: random.Random, size: int, tag: str = "") -> list[dict[str, Any]]:
    """`size` records of random outcome classes, each with a job id of its own."""
    records = []
    for n in range(size):
        kind = rng.choice(KINDS)
        records.append(record(f"{tag}m{n}", f"{kind}:{tag}{n}{'x' * rng.randrange(4)}"))
    return records


def run_batch(
    submit: SubmitService, records: list[dict[str, Any]], context: Any = None
) -> set[str]:
    """The message ids reported failed, as the submit function runs a batch."""
    response = async_process_partial_response(
        event={"Records": records},
        record_handler=submit.record_handler(),
        processor=AsyncBatchProcessor(
            event_type=EventType.SQS, raise_on_entire_batch_failure=False
        ),
        context=context,
    )
    return {str(failure["itemIdentifier"]) for failure in response["batchItemFailures"]}


def kind_of(rec: dict[str, Any]) -> str:
    return str(json.loads(rec["body"])["prompt"]).partition(":")[0]


def prompt_of(rec: dict[str, Any]) -> str:
    return str(json.loads(rec["body"])["prompt"])


def submit_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("submit")}


SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_reports_each_record_as_it_ended_when_records_fail_in_every_way(seed: int) -> None:
    # Given a generated batch mixing paid, refused, transient and crashing records
    rng = random.Random(seed)
    records = generated_batch(rng, rng.randint(1, 10))
    line = pipeline()

    # When the batch is processed
    failed = run_batch(line.submit, records)

    # Then exactly the records SQS must deliver again are reported failed
    for rec in records:
        kind, message_id = kind_of(rec), rec["messageId"]
        posts = line.api.posts.get(prompt_of(rec), 0)
        if kind == "paid":
            assert message_id not in failed and posts == 1
            assert message_id in line.workflows.started
        elif kind == "refused":
            assert message_id not in failed and posts == 0
            assert line.ledger.records[message_id].notified_at is not None
        elif kind in ("transient", "crash_before"):
            assert message_id in failed and posts == 0
        else:  # crash_after: paid, but the delivery broke before its workflow started
            assert message_id in failed and posts == 1
            assert message_id not in line.workflows.started


@pytest.mark.parametrize("seed", SEEDS)
def test_redelivery_never_pays_twice_when_failed_records_come_back(seed: int) -> None:
    # Given a generated batch processed once
    rng = random.Random(seed)
    records = generated_batch(rng, rng.randint(1, 10))
    line = pipeline()
    failed = run_batch(line.submit, records)

    # When SQS delivers the failed records again, twice
    for receive in (2, 3):
        again = [
            record(rec["messageId"], prompt_of(rec), receive)
            for rec in records
            if rec["messageId"] in failed
        ]
        failed = run_batch(line.submit, again) if again else set()

    # Then no prompt was ever paid for more than once, and every paid job's workflow runs
    assert all(count == 1 for count in line.api.posts.values()), line.api.posts
    for rec in records:
        if kind_of(rec) == "paid":
            assert rec["messageId"] in line.workflows.started


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_pays_only_records_it_reports_done_when_time_guard_trips_mid_batch(
    seed: int,
) -> None:
    # Given a batch of payable records and an invocation whose time runs out part-way
    rng = random.Random(seed)
    size = rng.randint(2, 10)
    records = [record(f"m{n}", f"paid:{n}") for n in range(size)]
    deadline = Deadline(calls_with_time=rng.randrange(size * 2))
    line = pipeline()

    # When the batch is processed
    failed = run_batch(line.submit, records, deadline)

    # Then each record is either paid and done, or unpaid and left for SQS at once
    for rec in records:
        paid = line.api.posts.get(prompt_of(rec), 0)
        if rec["messageId"] in failed:
            assert paid == 0
            assert (rec["receiptHandle"], 0) in line.queue.delays
        else:
            assert paid == 1 and rec["messageId"] in line.workflows.started
    assert failed, "the time ran out before every record was checked, yet none waited"


@pytest.mark.parametrize("seed", range(4))
def test_batch_leaves_no_thread_behind_when_it_returns(seed: int) -> None:
    # Given a generated batch, some of whose records fail (a failure's traceback keeps
    # the batch's objects alive in a reference cycle)
    rng = random.Random(seed)
    records = generated_batch(rng, 10)
    line = pipeline(settings=Settings(submit_concurrency=rng.randint(1, 10)))
    before = submit_threads()

    # When three invocations process it one after another
    for _ in range(3):
        run_batch(line.submit, records)

        # Then no record thread is left once each invocation has returned
        assert submit_threads() == before


def test_other_records_are_paid_when_one_record_hangs() -> None:
    # Given a batch whose first record's POST hangs until every other record was paid
    others = 6
    paid_others = threading.Semaphore(0)

    class HangingApi(ScriptedApi):
        def submit_generation(self, payload: Json) -> str:
            if str(payload["prompt"]).startswith("paid:hang"):
                for _ in range(others):
                    assert paid_others.acquire(timeout=30), "a record waited behind the hang"
            else:
                answer = super().submit_generation(payload)
                paid_others.release()
                return answer
            return super().submit_generation(payload)

    records = [record("hang", "paid:hang")] + [record(f"m{n}", f"paid:{n}") for n in range(others)]
    line = pipeline(HangingApi(), Settings(submit_concurrency=2))

    # When the batch is processed
    failed = run_batch(line.submit, records)

    # Then the hanging record did not hold the others back, and all were paid once
    assert failed == set()
    assert sorted(line.api.posts.values()) == [1] * (others + 1)


def test_concurrent_invocations_report_only_their_own_records_when_sharing_a_process() -> None:
    # Given one submit service and two generated batches run at the same time
    line = pipeline()
    rng = random.Random(7)
    batches = [generated_batch(rng, 10, tag) for tag in ("a", "b")]
    results: dict[int, set[str]] = {}
    start = threading.Barrier(2, timeout=30)

    def invoke(index: int) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            results[index] = run_batch(line.submit, batches[index])

        return run

    threads = [threading.Thread(target=invoke(i)) for i in (0, 1)]

    # When both invocations run
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Then each reports exactly its own records that must come back, and no other
    for index, records in enumerate(batches):
        expected = {
            rec["messageId"]
            for rec in records
            if kind_of(rec) in ("transient", "crash_before", "crash_after")
        }
        assert results[index] == expected


def test_handler_keeps_its_cap_when_reused_for_batches_on_new_event_loops() -> None:
    # Given one record handler serving batch after batch, each on an event loop of its own
    # (Powertools makes a new loop when the last one was closed), with more records than
    # the cap so that records wait for a slot
    line = pipeline(settings=Settings(submit_concurrency=1))
    handler = line.submit.record_handler()
    for round_ in range(3):
        records = [record(f"r{round_}m{n}", f"paid:{round_}-{n}") for n in range(4)]
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            # When the batch is processed
            response = async_process_partial_response(
                event={"Records": records},
                record_handler=handler,
                processor=AsyncBatchProcessor(
                    event_type=EventType.SQS, raise_on_entire_batch_failure=False
                ),
            )
        finally:
            loop.close()
            asyncio.set_event_loop(None)

        # Then every record of every batch was paid
        assert response["batchItemFailures"] == []
    assert len(line.api.posts) == 12
