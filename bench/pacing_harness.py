"""The submit side at a tier's full rate: the real submit handler and pacer, AWS held in memory.

What `tier_throughput_ratio` needs to show is whether the pacing design reaches the tier's
rate. Through moto in one process the local pipeline tops out near 4 starts a second, far
below scaled Silver, so this harness keeps only what decides the rate real:

- the submit function's code path as deployed: Powertools' `AsyncBatchProcessor` over
  `SubmitService.record_handler()`, `Admission`, `StartPacer` with the production settings
  (60 s window, 2 s margin, 3 s longest sleep), the real WaveSpeed client;
- the WaveSpeed simulator in its own process (tier preset, time scale), which counts the
  starts it accepted and answers 429 over the cap on a sliding window;
- as many submit functions as the tier's sizing in template.yaml (SubmitFunctions threads,
  each taking batches of 10 and submitting RecordsAtOnce of them at once).

The AWS side is in memory: the start schedule keeps the jobs table's conditional updates
in integer microseconds (`tests/unit/pacing_fakes.FakeSchedule`, held to the DynamoDB form's
answers by tests/integration/test_pacing_table.py; that form is exercised under concurrency
by tests/e2e/test_pacing.py), the ledger the table's conditional transitions behind one lock,
and `MemoryQueue` plays SQS (delays, visibility, receive counts, redrive). The pacer's clock
runs `1 / scale` times faster than the wall clock, like the simulator's, so the design runs
with its real numbers in a world that is simply faster; SQS delays and the batching window
are scaled alike.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)

from kling_local.cfn import parse
from kling_pipeline.errors import ErrorDetail
from kling_pipeline.job.record import JobRecord, Stage
from kling_pipeline.job.workflow import WorkflowState
from kling_pipeline.observability import logger, metrics
from kling_pipeline.settings import Settings
from kling_pipeline.submit.admission import Admission
from kling_pipeline.submit.pacing import UNPACED, Pacer, StartPacer, StartRate
from kling_pipeline.submit.refusal import Refuser
from kling_pipeline.submit.service import SubmitService
from kling_pipeline.types import Json
from kling_pipeline.wavespeed import WaveSpeedClient
from tests.unit.fakes import (
    FakeLedger,
    FakeNotifier,
    FakePromptFiles,
    FakeWorkflows,
    fake_signer,
)
from tests.unit.pacing_fakes import FakeSchedule

from .common import ROOT

BATCH_SIZE = 10
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:bench-jobs"


@dataclass(frozen=True)
class TierSizing:
    """A tier's row of template.yaml's `Tiers` mapping."""

    videos_per_minute: int
    submit_functions: int
    records_at_once: int
    batch_window_s: float

    @classmethod
    def of(cls, tier: str) -> TierSizing:
        row = parse((ROOT / "template.yaml").read_text())["Mappings"]["Tiers"][tier]
        return cls(
            videos_per_minute=int(row["VideosPerMinute"]),
            submit_functions=int(row["SubmitFunctions"]),
            records_at_once=int(row["RecordsAtOnce"]),
            batch_window_s=float(row["BatchWindow"]),
        )


class ScaledClock:
    """Epoch seconds running `1 / scale` times faster than the wall clock, from now on."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._origin = time.time()

    def __call__(self) -> float:
        return self._origin + (time.time() - self._origin) / self.scale

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.scale)


@dataclass(order=True)
class _Message:
    visible_at: float
    seq: int
    body: str = field(compare=False)
    attributes: dict[str, Any] = field(compare=False)
    message_id: str = field(compare=False, default_factory=lambda: str(uuid.uuid4()))
    receives: int = field(compare=False, default=0)
    receipt: str = field(compare=False, default="")


class MemoryQueue:
    """The job queue as SQS behaves: delays, visibility timeout, receive counts, redrive.

    Also the submit service's `Queue` (park, enqueue, retry_later) and `Resend` ports. Delays
    are given in the pipeline's seconds and waited for `scale` of them.
    """

    def __init__(self, *, scale: float, visibility_s: float, max_receive_count: int) -> None:
        self._scale = scale
        self._visibility_s = visibility_s
        self._max_receives = max_receive_count
        self._waiting: list[_Message] = []
        self._in_flight: dict[str, _Message] = {}
        self._seq = itertools.count()
        self._ready = threading.Condition()
        self.dead_letters: list[str] = []
        self.parked: list[tuple[str, dict[str, str]]] = []
        self.resent = 0

    def send(
        self, body: str, attributes: Mapping[str, Any] | None = None, delay_s: float = 0
    ) -> None:
        message = _Message(
            time.monotonic() + delay_s * self._scale, next(self._seq), body, dict(attributes or {})
        )
        with self._ready:
            heapq.heappush(self._waiting, message)
            self._ready.notify()

    def receive(self, wait_s: float, window_s: float) -> list[dict[str, Any]]:
        """Up to a batch of records, as Lambda's poller hands them: it waits up to `wait_s` for
        the first and, like the event source's batching window, up to `window_s` to fill it."""
        taken: list[_Message] = []
        deadline = time.monotonic() + wait_s
        with self._ready:
            while len(taken) < BATCH_SIZE:
                now = time.monotonic()
                if self._waiting and self._waiting[0].visible_at <= now:
                    self._take(heapq.heappop(self._waiting), now, taken)
                    continue
                if taken and deadline > now + window_s * self._scale:
                    deadline = now + window_s * self._scale
                due = self._waiting[0].visible_at if self._waiting else deadline
                if now >= deadline:
                    break
                self._ready.wait(max(0.0, min(due, deadline) - now))
        return [self._record(m) for m in taken]

    def _take(self, message: _Message, now: float, taken: list[_Message]) -> None:
        if message.receives >= self._max_receives:
            self.dead_letters.append(message.body)  # the redrive policy, on the next receive
            return
        message.receives += 1
        message.receipt = str(uuid.uuid4())
        message.visible_at = now + self._visibility_s * self._scale
        self._in_flight[message.receipt] = message
        taken.append(message)

    @staticmethod
    def _record(message: _Message) -> dict[str, Any]:
        attributes = {
            name: {"dataType": value["DataType"], "stringValue": value.get("StringValue")}
            for name, value in message.attributes.items()
        }
        return {
            "messageId": message.message_id,
            "receiptHandle": message.receipt,
            "body": message.body,
            "attributes": {"ApproximateReceiveCount": str(message.receives)},
            "messageAttributes": attributes,
            "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN,
        }

    def settle(self, receipts: list[str], failed: set[str]) -> None:
        """After an invocation: deletes what succeeded; a failed record stays hidden until its
        visibility timeout (or the delay `retry_later` gave it), then comes back."""
        with self._ready:
            for receipt in receipts:
                message = self._in_flight.pop(receipt, None)
                if message is not None and receipt in failed:
                    heapq.heappush(self._waiting, message)
            self._ready.notify_all()

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        with self._ready:
            message = self._in_flight.get(receipt_handle)
            if message is not None:
                message.visible_at = time.monotonic() + delay_s * self._scale

    def resend(self, body: str, attributes: Mapping[str, Any], delay_s: int) -> None:
        self.resent += 1
        self.send(body, attributes, delay_s)

    def park(self, body: str, attributes: dict[str, str]) -> None:
        self.parked.append((body, attributes))

    def enqueue(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        for body, attributes in messages:
            self.send(
                body, {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
            )

    def backlog(self) -> int:
        with self._ready:
            return len(self._waiting) + len(self._in_flight)


class LockedLedger(FakeLedger):
    """The in-memory jobs table with every conditional transition atomic, as DynamoDB's are."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return super().get(job_id)

    def claim_submission(
        self, job_id: str, *, lease_s: int, job: Json, source: Json, fingerprint: str = ""
    ) -> JobRecord | None:
        with self._lock:
            return super().claim_submission(
                job_id, lease_s=lease_s, job=job, source=source, fingerprint=fingerprint
            )

    def release(self, job_id: str) -> None:
        with self._lock:
            super().release(job_id)

    def record_prediction(self, job_id: str, prediction_id: str, state: WorkflowState) -> None:
        with self._lock:
            super().record_prediction(job_id, prediction_id, state)

    def mark_started(self, job_id: str, execution_arn: str) -> bool:
        with self._lock:
            return super().mark_started(job_id, execution_arn)

    def claim_terminal(
        self, job_id: str, status: str, error: ErrorDetail | None = None, *, lease_s: int = 120
    ) -> bool:
        with self._lock:
            return super().claim_terminal(job_id, status, error, lease_s=lease_s)

    def claim_park(self, job_id: str) -> bool:
        with self._lock:
            return super().claim_park(job_id)

    def mark_redrivable(self, job_id: str, *, resume: Stage | None) -> None:
        with self._lock:
            super().mark_redrivable(job_id, resume=resume)

    def reserve_budget(self, day: str, amount_usd: float, cap_usd: float) -> bool:
        with self._lock:
            return super().reserve_budget(day, amount_usd, cap_usd)

    def refund_budget(self, day: str, amount_usd: float) -> None:
        with self._lock:
            super().refund_budget(day, amount_usd)


@dataclass
class SubmitSide:
    """The tier's submit functions over one queue, ledger and schedule."""

    queue: MemoryQueue
    ledger: LockedLedger
    notifier: FakeNotifier
    service: SubmitService
    sizing: TierSizing
    scale: float
    invocations: int = 0

    @classmethod
    def build(
        cls,
        sizing: TierSizing,
        *,
        api_base: str,
        api_key: str,
        scale: float,
        paced_rate: int | None,
        max_receive_count: int = 2,
    ) -> SubmitSide:
        """`paced_rate`: the videos per minute the pacer keeps to (None: unpaced)."""
        clock = ScaledClock(scale)
        settings = Settings(
            api_base=api_base,
            videos_per_minute=paced_rate or 0,
            submit_concurrency=sizing.records_at_once,
            max_receive_count=max_receive_count,
        )
        queue = MemoryQueue(scale=scale, visibility_s=120, max_receive_count=max_receive_count)
        ledger = LockedLedger()
        notifier = FakeNotifier(ledger)
        pacer: Pacer = UNPACED
        if paced_rate:
            rate = StartRate(
                videos_per_minute=paced_rate,
                window_s=settings.rate_window_s,
                margin_s=settings.rate_margin_s,
                max_wait_s=settings.pace_max_wait_s,
            )
            pacer = StartPacer(rate, FakeSchedule(), clock=clock, sleep=clock.sleep)
        pool = urllib3.PoolManager(maxsize=sizing.submit_functions * sizing.records_at_once)
        api = WaveSpeedClient(api_base, lambda: api_key, http=pool)
        admission = Admission(
            settings, ledger=ledger, api=api, workflows=FakeWorkflows(), pacer=pacer, clock=clock
        )
        signer = fake_signer()
        service = SubmitService(
            settings,
            admission=admission,
            refuser=Refuser(ledger=ledger, notifier=notifier, queue=queue, signer=signer),
            ledger=ledger,
            queue=queue,
            prompt_files=FakePromptFiles(),
            signer=signer,
            resend=queue,
        )
        return cls(queue, ledger, notifier, service, sizing, scale)

    @contextmanager
    def running(self) -> Iterator[None]:
        """The tier's submit functions polling the queue until the block ends."""
        stop = threading.Event()
        threads = [
            threading.Thread(target=self._function, args=(stop,), daemon=True)
            for _ in range(self.sizing.submit_functions)
        ]
        with _quiet():
            for thread in threads:
                thread.start()
            try:
                yield
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=60)

    def _function(self, stop: threading.Event) -> None:
        handler = self.service.record_handler()
        while not stop.is_set():
            records = self.queue.receive(wait_s=0.2, window_s=self.sizing.batch_window_s)
            if not records:
                continue
            self.invocations += 1
            answer = async_process_partial_response(
                event={"Records": records},
                record_handler=handler,
                processor=AsyncBatchProcessor(
                    event_type=EventType.SQS, raise_on_entire_batch_failure=False
                ),
            )
            failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
            self.queue.settle(
                [r["receiptHandle"] for r in records],
                {r["receiptHandle"] for r in records if r["messageId"] in failed},
            )

    def paid_jobs(self) -> int:
        """Job ids with a prediction recorded: what the submit side paid for."""
        return sum(1 for r in self.ledger.records.values() if r.prediction_id)

    def give_ups(self) -> int:
        return sum(
            1
            for n in self.notifier.published
            if (n.get("error") or {}).get("code") == "retries_exhausted"
        )


@contextmanager
def _quiet() -> Iterator[None]:
    """The functions' INFO logs and EMF metric blobs (Powertools prints them on stdout every
    100 values) stay out of the benchmark's output, whose stdout is for BENCH lines."""
    previous = logger.log_level
    logger.setLevel("ERROR")
    try:
        with Path(os.devnull).open("w") as sink, redirect_stdout(sink):
            yield
    finally:
        metrics.clear_metrics()
        logger.setLevel(previous)


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    """Polls `condition` until true or the timeout; returns the last answer."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)
    return True
