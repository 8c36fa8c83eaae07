"""Hostile-input suite: generated careless, hostile, oversized and malformed inputs, end to end.

Each class of input is generated (seeded, so a failure replays), sent through the whole local
pipeline (real ASL, WaveSpeed simulator) and checked against the money invariants:
- at most one paid task per job id, and no task for anything invalid;
- per job id: any number of `rejected` notifications, then at most one other outcome;
- no silent drop: every message ran, was a duplicate of one that did, or sits in the DLQ
  with a reason;
- no secret in any output: notifications, DLQ attributes, captured logs.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kling_local.pipeline import LocalPipeline, RunResult
from kling_pipeline.job.request import message_job_id, requested_job_id
from tests.conftest import PipelineFactory, run, simulator_of

SEED = 9
SQS_MAX_BODY = 250_000


@dataclass
class Sent:
    """Every message of a run and what it must come to."""

    #: body -> the job id whose outcome accounts for it.
    bodies: dict[str, str] = field(default_factory=dict)
    #: Valid, distinct requests: each must be paid exactly once.
    paid: set[str] = field(default_factory=set)

    @staticmethod
    def job_id_of(body: str) -> str:
        """The job id a body names when it can be read, else the one its content derives."""
        return requested_job_id(body) or message_job_id(body)


def send(pipeline: LocalPipeline, sent: Sent, body: str, **attributes: str) -> None:
    extra: dict[str, Any] = {}
    if attributes:
        extra["MessageAttributes"] = {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        }
    pipeline.sqs.send_message(QueueUrl=pipeline.job_queue_url, MessageBody=body, **extra)
    sent.bodies[body] = sent.job_id_of(body)


def careless(rng: random.Random) -> Iterator[tuple[str, bool]]:
    """What a hurried user sends: typos, wrong types, wrappers, blank or invisible prompts."""
    prompt = f"A careless fox number {rng.randrange(10**6)}"
    yield f"  {prompt} \n", True
    yield "\ufeff" + json.dumps({"prompt": prompt, "job_id": "bom-1"}), True
    yield json.dumps([{"prompt": prompt, "job_id": "in-a-list"}]), False
    yield json.dumps(prompt), False
    yield str(rng.randrange(1, 10**6)), False
    for typo in ("Prompt", "promt", "durations", "aspectRatio"):
        yield json.dumps({"prompt": prompt, typo: 5}), False
    for duration in ("5", 5.0, 7, True, None):
        yield json.dumps({"prompt": prompt, "duration": duration}), False
    yield '{"prompt": "dupe", "duration": 5, "duration": 10}', False
    yield json.dumps({"prompt": "\u200b\u200d\u2060", "job_id": "invisible-1"}), False
    yield " ", False
    yield json.dumps({"prompt": prompt, "aspect_ratio": "16/9"}), False


def hostile(rng: random.Random) -> Iterator[tuple[str, bool]]:
    """What an attacker (or a broken producer) sends: parse bombs, non-finite numbers,
    surrogates, event look-alikes."""
    yield '{"prompt": "bomb", "metadata": {"n": ' + "9" * 5000 + "}}", False
    yield '{"prompt": "bomb", "guidance_scale": 1' + "0" * 400 + "}", False
    yield "[" * 2000 + "]" * 2000, False
    yield '{"prompt": "deep", "metadata": ' + '{"a": ' * 1500 + "1" + "}" * 1500 + "}", False
    yield '{"prompt": "nan", "metadata": {"x": NaN}}', False
    yield '{"prompt": "inf", "guidance_scale": Infinity}', False
    yield '{"prompt": "inf", "metadata": {"x": [1, -Infinity]}}', False
    yield '{"prompt": "surrogate \\ud800 here"}', False
    yield json.dumps({"prompt": "looks like an event", "Records": []}), False
    yield json.dumps({"prompt": "looks like a test event", "Event": "s3:TestEvent"}), False
    yield json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {}}]}), False
    yield json.dumps({"prompt": "x", "job_id": "../../etc/passwd"}), False
    yield json.dumps({"prompt": "x", "job_id": "a" * 65}), False
    yield (
        json.dumps({"prompt": "echo", "metadata": {"auth": f"Bearer {rng.randrange(10**20)}"}}),
        True,
    )


def oversized(rng: random.Random) -> Iterator[tuple[str, bool]]:
    """Bodies at the edge of SQS's limit: every echo of them must still fit in SNS."""
    yield "P" * SQS_MAX_BODY, False
    yield json.dumps({"prompt": "x" * (SQS_MAX_BODY - 20)}), False
    yield json.dumps({("k" * 80_000) + str(n): n for n in range(3)}), False
    yield json.dumps({"prompt": "meta", "metadata": {"blob": "m" * 3000}}), False
    yield json.dumps({"prompt": "wide", "metadata": {str(n): n for n in range(20_000)}}), False


def malformed(rng: random.Random) -> Iterator[tuple[str, bool]]:
    """Valid jobs cut at random points, and random text that might parse as anything."""
    whole = json.dumps({"prompt": "A cut message", "duration": 10, "metadata": {"a": [1, 2]}})
    for _ in range(6):
        yield whole[: rng.randrange(1, len(whole) - 1)], False
    alphabet = '{}[]":,0123456789eE+-.nulltruefalseNaN \\u2028\u2028\x0c'
    for _ in range(6):
        yield "{" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(5, 60))), False


def valid(rng: random.Random, count: int) -> Iterator[str]:
    for n in range(count):
        yield json.dumps({"prompt": f"A valid heron {n} {rng.randrange(10**6)}"})


def dead_letters(pipeline: LocalPipeline) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = pipeline.sqs.receive_message(
            QueueUrl=pipeline.dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=600,
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(dict(m) for m in batch)


def assert_invariants(
    pipeline: LocalPipeline, result: RunResult, sent: Sent
) -> dict[str, dict[str, Any]]:
    """Checks the invariants; returns the DLQ's messages (body -> attributes)."""
    notes = result.notifications
    by_job = result.by_job()
    # One paid task per valid request, none for anything else.
    tasks = simulator_of(pipeline).tasks()
    paid_ids = [n["request_id"] for n in notes if n["status"] != "rejected" and n["request_id"]]
    assert len(tasks) == len(set(paid_ids)) == len(paid_ids) == len(sent.paid), [
        t["prompt"][:60] for t in tasks
    ]
    # Per job id: rejections, then at most one other outcome; never two paid outcomes.
    for job_id, job_notes in by_job.items():
        statuses = [n["status"] for n in job_notes]
        others = [s for s in statuses if s != "rejected"]
        assert len(others) <= 1, (job_id, statuses)
        if others:
            assert statuses[-1] == others[0], (job_id, statuses)
    # No silent drop: a notification under the job id, or a DLQ entry with a reason.
    parked = {m["Body"]: m["MessageAttributes"] for m in dead_letters(pipeline)}
    for body, job_id in sent.bodies.items():
        if job_id in by_job:
            continue
        assert body in parked, f"dropped silently: {body[:80]!r} ({job_id})"
        assert parked[body]["reason"]["StringValue"], body[:80]
    # Every notification is strict JSON (the tap decoded it) and under SNS's limit.
    for note in notes:
        assert len(json.dumps(note).encode()) < 256 * 1024
    return parked


def test_generated_careless_hostile_oversized_and_malformed_messages_keep_the_invariants(
    pipeline: LocalPipeline, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a paid job and a rejected one, settled first
    rng = random.Random(SEED)
    sent = Sent()
    send(pipeline, sent, json.dumps({"prompt": "The paid original", "job_id": "paid-1"}))
    send(pipeline, sent, json.dumps({"prompt": "Wrong duration", "job_id": "fix-1", "duration": 7}))
    sent.paid.add("paid-1")
    run(pipeline)

    # When every generated class is sent, with conflicts, a fix-and-resend, duplicates and
    # forged internal attributes among them
    for body, pays in [*careless(rng), *hostile(rng), *oversized(rng), *malformed(rng)]:
        send(pipeline, sent, body)
        if pays:
            sent.paid.add(sent.job_id_of(body))
    for body in valid(rng, 4):
        send(pipeline, sent, body)
        send(pipeline, sent, body)  # the identical body again: one job
        sent.paid.add(message_job_id(body))
    send(pipeline, sent, json.dumps({"prompt": "A thief", "job_id": "paid-1"}))
    send(pipeline, sent, json.dumps({"prompt": "The paid original", "job_id": "paid-1", "x": 1}))
    send(pipeline, sent, json.dumps({"prompt": "Fixed duration", "job_id": "fix-1"}))
    sent.paid.add("fix-1")
    forged_source = json.dumps({"type": "s3", "bucket": "b", "key": "prompts/forged.txt"})
    forged_body = json.dumps({"prompt": "Forged origin"})
    send(pipeline, sent, forged_body, **{"kp-source": forged_source, "job_id": "paid-1"})
    sent.paid.add(message_job_id(forged_body))
    result = run(pipeline)

    # Then the invariants hold for the whole run
    parked = assert_invariants(pipeline, result, sent)
    by_job = result.by_job()
    assert [n["status"] for n in by_job["paid-1"]] == ["completed"]
    assert by_job["paid-1"][0]["input"]["prompt"] == "The paid original"
    assert [n["status"] for n in by_job["fix-1"]] == ["rejected", "completed"]
    assert by_job[message_job_id(forged_body)][0]["source"]["type"] == "sqs"
    # ... and both messages reusing the paid job's id are parked as conflicts
    thief = json.dumps({"prompt": "A thief", "job_id": "paid-1"})
    invalid = json.dumps({"prompt": "The paid original", "job_id": "paid-1", "x": 1})
    for body in (thief, invalid):
        assert parked[body]["error_code"]["StringValue"] == "job_id_conflict"
    assert "sim-test-key" not in capfd.readouterr().out


def test_generated_prompt_files_keep_the_invariants_line_by_line(
    pipeline: LocalPipeline,
) -> None:
    # Given prompt files of every shape: valid lines among bombs, a .json bomb, an invisible
    # .txt, a folder marker, and the same file uploaded twice
    rng = random.Random(SEED + 1)
    lines = [json.dumps({"prompt": f"A file line {n}"}) for n in range(3)]
    bad = [body for body, _ in [*list(hostile(rng))[:8], *list(malformed(rng))[:4]]]
    jsonl = "\n".join([lines[0], *bad, lines[1], "\u2028", lines[2]]).encode()
    pipeline.upload("mixed.jsonl", jsonl)
    pipeline.upload("bomb.json", b'[{"prompt": "a"}, ' + b"[" * 3000 + b"]" * 3000 + b"]")
    pipeline.upload("ghost.txt", "\u200b\u200c".encode())
    pipeline.s3.put_object(Bucket=pipeline.prompts_bucket, Key="prompts/", Body=b"")

    # When the pipeline runs, and the first file is uploaded once more
    first = run(pipeline)
    pipeline.upload("mixed.jsonl", jsonl)
    result = run(pipeline)

    # Then each valid line is paid once per upload that could be read, every invalid line and
    # unusable file has its rejection, and the folder marker is silent
    by_job = result.by_job()
    completed = sorted(
        n["input"]["prompt"] for n in result.notifications if n["status"] == "completed"
    )
    # (the prompts bucket is versioned: the second upload is a new version, so new jobs)
    assert completed == sorted([f"A file line {n}" for n in range(3)] * 2)
    completed_ids = [n["job_id"] for n in result.notifications if n["status"] == "completed"]
    assert len(set(completed_ids)) == 6
    assert len(simulator_of(pipeline).tasks()) == len(completed)
    rejected_lines = [
        n for n in first.notifications if n["status"] == "rejected" and "line" in n["source"]
    ]
    assert len(rejected_lines) == len(bad)
    keys = {n["source"].get("key") for n in result.notifications if n["status"] == "rejected"}
    assert {"prompts/bomb.json", "prompts/ghost.txt"} <= keys
    assert "prompts/" not in keys
    for job_id, notes in by_job.items():
        assert len([n for n in notes if n["status"] != "rejected"]) <= 1, job_id


class _EchoingApi(BaseHTTPRequestHandler):
    """A WaveSpeed stand-in (or a proxy) that echoes the request's Authorization header."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        echoed = f"invalid request; you sent Authorization: {self.headers.get('Authorization')}"
        body = json.dumps({"code": 400, "message": echoed, "data": None}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_no_secret_leaves_the_process_when_the_api_echoes_the_authorization_header(
    make_pipeline: PipelineFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given an API that echoes the key in its errors
    secret = f"wsk-{random.Random(SEED).randrange(10**30):030d}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pipeline = make_pipeline(
            api_base=f"http://127.0.0.1:{server.server_address[1]}", api_key=secret
        )

        # When jobs are refused by it
        for n in range(3):
            pipeline.send_prompt(f"A leaky request {n}", job_id=f"leak-{n}")
        result = run(pipeline)
    finally:
        server.shutdown()
        server.server_close()

    # Then each job failed with the API's reason, and the key is in no output
    assert sorted(n["status"] for n in result.notifications) == ["failed"] * 3
    outputs = [json.dumps(result.notifications), json.dumps(dead_letters(pipeline))]
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err]
    assert all(secret not in text for text in outputs)
    assert "[redacted]" in outputs[0]
