"""Submit benchmark: a full 10-record SQS batch against one record, WaveSpeed answering slowly.

Both go through the real submit handler in the local pipeline (moto resources from
template.yaml, the job ledger, the state machine start). With every submit held 0.3 s by the
simulator, a batch that submits its records concurrently costs little more than one record;
one that submits them in turn costs ten times as much.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import urllib3

from kling_local.pipeline import LocalOptions, LocalPipeline

from .common import ROOT, Figure, info, median, server_process, timed

SUBMIT_LATENCY_S = 0.3
BATCH = 10
ROUNDS = 3
#: One worker per record, so the simulator's latency, not the pool, bounds the batch.
CONCURRENCY = BATCH
#: Workflows started by the benchmark stay in their first Wait, so no poll or copy running in
#: the background competes with the submits being timed.
PARKED_WAIT_S = 3600


def _events_template() -> dict[str, Any]:
    """The SQS record of events/submit-sqs-job.json, the event `sam local invoke` uses."""
    event = json.loads((ROOT / "events" / "submit-sqs-job.json").read_text())
    record: dict[str, Any] = event["Records"][0]
    return record


class SubmitBench:
    """Feeds the submit handler fresh jobs and times it."""

    def __init__(self, pipeline: LocalPipeline, api_base: str) -> None:
        self._pipeline = pipeline
        self._stats_url = f"{api_base}/_sim/stats"
        self._http = urllib3.PoolManager()
        self._function = pipeline.names["SubmitFunction"]
        poller = next(p for p in pipeline.pollers if p["function"] == self._function)
        self._template = {**_events_template(), "eventSourceARN": poller["queue_arn"]}
        self._sent = 0

    def _event(self, size: int) -> dict[str, Any]:
        records = []
        for _ in range(size):
            self._sent += 1
            # A fresh message id and prompt per record: each is a new job, never a duplicate.
            body = {"prompt": f"benchmark job {self._sent}: a paper boat in the rain"}
            records.append(
                {**self._template, "messageId": str(uuid.uuid4()), "body": json.dumps(body)}
            )
        return {"Records": records}

    def submit(self, size: int) -> float:
        """Seconds the handler takes for a batch of `size` new jobs; fails unless all ran."""
        created = self._tasks_created()
        event = self._event(size)
        (payload, errored, _), seconds = timed(lambda: self._pipeline.invoke(self._function, event))
        failures = [] if errored else json.loads(payload).get("batchItemFailures", [])
        if errored or failures:
            raise RuntimeError(f"the submit handler did not accept the batch: {payload}")
        if self._tasks_created() - created != size:
            raise RuntimeError(f"expected {size} WaveSpeed tasks for a batch of {size}")
        return seconds

    def _tasks_created(self) -> int:
        stats = json.loads(self._http.request("GET", self._stats_url).data)
        return int(stats["tasks_created"])

    @staticmethod
    def settle(timeout_s: float = 10.0) -> None:
        """Waits until this process is idle: the workflows started by the previous batch run
        moto's ASL interpreter in background threads up to their Wait, and that CPU time must
        not land in the next measurement."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = time.process_time()
            time.sleep(0.2)
            if time.process_time() - before < 0.01:
                return


def run() -> list[Figure]:
    # WaveSpeed is remote in production: the simulator runs in its own process, so its Python
    # work does not share the interpreter lock with the submits being timed.
    with server_process("slow-submit", str(SUBMIT_LATENCY_S)) as api:
        return _measure(str(api["base_url"]), str(api["api_key"]))


def _measure(api_base: str, api_key: str) -> list[Figure]:
    options = LocalOptions(
        api_base=api_base,
        api_key=api_key,
        env={"SUBMIT_CONCURRENCY": str(CONCURRENCY)},
        poll_first_wait_s=PARKED_WAIT_S,
        poll_deadline_s=2 * PARKED_WAIT_S,
        # Webhooks would wake the started workflows at once (no first Wait to park in), and
        # their polls, copies and notifications would compete with the submits being timed.
        parameter_overrides={"EnableWebhooks": "false"},
    )
    with LocalPipeline(options) as pipeline:
        from kling_pipeline.settings import load_settings

        info(f"submit concurrency in use: {load_settings().submit_concurrency}")
        bench = SubmitBench(pipeline, api_base)
        # Warm-up: the API key read, clients, connections and worker threads are paid once
        # per container, not per batch.
        bench.submit(1)
        bench.submit(BATCH)
        singles: list[float] = []
        batches: list[float] = []
        for _ in range(ROUNDS):
            bench.settle()
            singles.append(bench.submit(1))
            bench.settle()
            batches.append(bench.submit(BATCH))
            info(f"submit: 1 record {singles[-1]:.2f}s, {BATCH} records {batches[-1]:.2f}s")
    ratio = round(median(batches) / median(singles), 2)
    return [Figure("submit_batch10_ratio", ratio, "ratio", "<=2.0")]
