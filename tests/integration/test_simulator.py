"""Integration tests: the WaveSpeed simulator over real HTTP, driven by raw clients and the SDK."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import wavespeed

import kling_local
from kling_local.mp4 import VideoBlob, looks_like_mp4, parse_boxes
from kling_local.simulator import MODEL, SimulatorConfig, WaveSpeedSimulator
from tests.conftest import SimFactory

KEY = "sim-test-key"
MODEL_PATH = f"/api/v3/{MODEL}"
OPTIMIZER_PATH = "/api/v3/wavespeed-ai/prompt-optimizer"
TERMINAL = {"completed", "failed", "cancelled", "timeout"}

Response = tuple[int, dict[str, str], bytes]


#: Simulator settings of this module's `make_sim` / `sim` fixtures (tests/conftest.py).
SIM_DEFAULTS: dict[str, Any] = {
    "generation_seconds": 0.2,
    "processing_after_seconds": 0.05,
    "slow_submit_seconds": 0.6,
}


def call(
    sim: WaveSpeedSimulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Response:
    conn = http.client.HTTPConnection(sim.host_port, timeout=timeout)
    try:
        all_headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call_json(sim: WaveSpeedSimulator, method: str, path: str, body: Any = None,
              **kwargs: Any) -> tuple[int, dict[str, Any]]:  # fmt: skip
    status, _, raw = call(sim, method, path, body, **kwargs)
    return status, json.loads(raw)


def submit(
    sim: WaveSpeedSimulator, prompt: str, *, timeout: float = 5.0, **extra: Any
) -> tuple[int, dict[str, Any]]:
    return call_json(sim, "POST", MODEL_PATH, {"prompt": prompt, **extra}, timeout=timeout)


def result(sim: WaveSpeedSimulator, task_id: str) -> tuple[int, dict[str, Any]]:
    return call_json(sim, "GET", f"/api/v3/predictions/{task_id}/result")


def wait_terminal(sim: WaveSpeedSimulator, task_id: str, limit: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, envelope = result(sim, task_id)
        if status == 200 and envelope["data"]["status"] in TERMINAL:
            data: dict[str, Any] = envelope["data"]
            return data
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def completed_task(sim: WaveSpeedSimulator, prompt: str) -> dict[str, Any]:
    status, envelope = submit(sim, prompt)
    assert status == 200, envelope
    data = wait_terminal(sim, envelope["data"]["id"])
    assert data["status"] == "completed"
    return data


def download(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET a URL; an IncompleteRead is returned as status -1 with the partial body."""
    parts = url.split("/", 3)
    conn = http.client.HTTPConnection(parts[2], timeout=5)
    try:
        conn.request("GET", "/" + parts[3], headers=headers or {})
        response = conn.getresponse()
        response_headers = dict(response.getheaders())
        try:
            return response.status, response_headers, response.read()
        except http.client.IncompleteRead as cut:
            return -1, response_headers, cut.partial
    finally:
        conn.close()


# ------------------------------------------------------------------------------ auth & envelope


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_api_rejects_request_when_bearer_missing_or_wrong(
    sim: WaveSpeedSimulator, key: str | None
) -> None:
    # Given no key or a wrong key
    # When submitting and polling
    submit_status, submit_body = call_json(sim, "POST", MODEL_PATH, {"prompt": "x"}, key=key)
    poll_status, poll_body = call_json(sim, "GET", "/api/v3/predictions/abc/result", key=key)

    # Then both answer 401 with the error envelope, and nothing is created
    expected = {"code": 401, "message": "Unauthorized", "data": None}
    assert (submit_status, submit_body) == (401, expected)
    assert (poll_status, poll_body) == (401, expected)
    assert sim.stats()["unauthorized"] == 2
    assert sim.stats()["tasks_created"] == 0


def test_submit_returns_created_envelope_when_input_valid(sim: WaveSpeedSimulator) -> None:
    # Given a valid Kling T2V request
    body = {
        "prompt": "a red fox running through snow",
        "negative_prompt": "blurry",
        "aspect_ratio": "9:16",
        "duration": 10,
        "guidance_scale": 0.5,
    }

    # When submitting it
    status, envelope = call_json(sim, "POST", MODEL_PATH, body)

    # Then the success envelope carries a freshly created task
    assert status == 200
    assert (envelope["code"], envelope["message"]) == (200, "success")
    data = envelope["data"]
    assert data["model"] == MODEL
    assert data["status"] == "created"
    assert data["outputs"] == [] and data["has_nsfw_contents"] == []
    assert data["error"] == "" and data["executionTime"] == 0
    assert data["timings"] == {"inference": 0}
    assert data["urls"]["get"] == f"{sim.base_url}/api/v3/predictions/{data['id']}/result"
    assert datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")).tzinfo is not None
    assert sim.tasks()[0]["input"]["duration"] == 10


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"prompt": "x", "duration": 7}, "duration"),
        ({"prompt": "x", "duration": "7"}, "duration"),
        ({"prompt": "x", "duration": True}, "duration"),
        ({"prompt": "x", "guidance_scale": 1.5}, "guidance_scale"),
        ({"prompt": "x", "guidance_scale": "0.5"}, "guidance_scale"),
        ({"prompt": "x", "negative_prompt": 3}, "negative_prompt"),
        (b"{not json", "JSON"),
        (["prompt"], "JSON object"),
    ],
)
def test_submit_returns_400_when_input_invalid(
    sim: WaveSpeedSimulator, body: Any, message: str
) -> None:
    # Given an invalid body / When submitting
    status, envelope = call_json(sim, "POST", MODEL_PATH, body)

    # Then it is a 400 envelope naming the problem, and no paid task exists
    assert status == 400
    assert envelope["code"] == 400 and envelope["data"] is None
    assert message in envelope["message"]
    stats = sim.stats()
    assert (stats["submit_requests"], stats["tasks_created"]) == (1, 0)


@pytest.mark.parametrize("duration", [5, 10, "5", "10"])
def test_submit_accepts_duration_when_int_or_numeric_string(
    sim: WaveSpeedSimulator, duration: int | str
) -> None:
    # Given a duration as int or string / When submitting / Then it is accepted as an int
    status, _ = submit(sim, "waves", duration=duration)
    assert status == 200
    assert sim.tasks()[0]["input"]["duration"] == int(duration)


def test_unknown_prediction_returns_404_envelope(sim: WaveSpeedSimulator) -> None:
    # Given an id that was never issued / When polling
    status, envelope = result(sim, "0123456789abcdef")

    # Then a 404 envelope answers
    assert status == 404
    assert envelope["code"] == 404 and envelope["data"] is None


def test_unknown_model_returns_404_envelope(sim: WaveSpeedSimulator) -> None:
    # Given another model path / When posting / Then 404 and no task
    status, envelope = call_json(sim, "POST", "/api/v3/acme/other-model", {"prompt": "x"})
    assert status == 404 and envelope["code"] == 404
    assert sim.stats()["tasks_created"] == 0


# ------------------------------------------------------------------------------ lifecycle


def test_status_progresses_created_processing_completed_when_polled(
    make_sim: SimFactory,
) -> None:
    # Given a simulator with a short generation time
    sim = make_sim(processing_after_seconds=0.15, generation_seconds=0.45)
    _, envelope = submit(sim, "a lighthouse at dusk")
    task_id = envelope["data"]["id"]

    # When polling until completion
    seen: list[str] = []
    last: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, body = result(sim, task_id)
        assert status == 200
        last = body["data"]
        if not seen or seen[-1] != last["status"]:
            seen.append(last["status"])
        if last["status"] == "completed":
            break
        time.sleep(0.03)

    # Then the statuses come in order and the finished task lists its MP4 output
    assert seen == ["created", "processing", "completed"]
    assert last["outputs"] == [f"{sim.base_url}/predictions/{task_id}/1.mp4"]
    assert last["has_nsfw_contents"] == [False]
    assert last["executionTime"] == 450
    assert sim.tasks()[0]["status"] == "completed"


def test_sdk_run_completes_and_output_matches_sha_when_downloaded(
    sim: WaveSpeedSimulator,
) -> None:
    # Given the official SDK pointed at the simulator
    client = wavespeed.Client(api_key=KEY, base_url=sim.base_url)

    # When running the model and downloading the output
    output = client.run(MODEL, {"prompt": "a paper boat on a river"}, poll_interval=0.1)
    (url,) = output["outputs"]
    with urllib.request.urlopen(url, timeout=5) as response:
        content_type = response.headers["Content-Type"]
        data = response.read()

    # Then the bytes are an MP4 whose digest the simulator predicted
    (task,) = sim.tasks()
    assert url == f"{sim.base_url}/predictions/{task['id']}/1.mp4"
    assert content_type == "video/mp4"
    assert looks_like_mp4(data[:32])
    assert [kind for kind, _ in parse_boxes(data)] == ["ftyp", "moov", "mdat"]
    assert hashlib.sha256(data).hexdigest() == sim.output_sha256(task["id"])
    assert sim.stats()["tasks_created"] == 1


def test_sdk_run_raises_when_fail_marker(sim: WaveSpeedSimulator) -> None:
    # Given a prompt asking the simulator to fail
    client = wavespeed.Client(api_key=KEY, base_url=sim.base_url)

    # When running it / Then the SDK reports the failure with the task id
    with pytest.raises(RuntimeError, match=r"Prediction failed \(task_id: [0-9a-f]+\)"):
        client.run(MODEL, {"prompt": "doomed [sim:fail]"}, poll_interval=0.1)
    assert sim.tasks()[0]["status"] == "failed"


def test_sync_mode_submit_answers_with_completed_result(sim: WaveSpeedSimulator) -> None:
    # Given enable_sync_mode / When submitting / Then the answer is already completed
    status, envelope = submit(sim, "sync please", enable_sync_mode=True)
    assert status == 200
    assert envelope["data"]["status"] == "completed"
    assert len(envelope["data"]["outputs"]) == 1


def test_outputs_differ_between_tasks_when_same_size(sim: WaveSpeedSimulator) -> None:
    # Given two completed tasks
    first = completed_task(sim, "one")
    second = completed_task(sim, "two")

    # Then their outputs are distinct MP4s, so a mixed-up download is detectable
    assert sim.output_sha256(first["id"]) != sim.output_sha256(second["id"])


# ------------------------------------------------------------------------------ terminal markers


@pytest.mark.parametrize(
    ("marker", "expected"),
    [("[sim:fail]", "failed"), ("[sim:cancel]", "cancelled"), ("[sim:timeout]", "timeout")],
)
def test_terminal_marker_sets_status_when_generation_ends(
    sim: WaveSpeedSimulator, marker: str, expected: str
) -> None:
    # Given a prompt carrying a terminal marker
    _, envelope = submit(sim, f"scene {marker}")

    # When it finishes
    data = wait_terminal(sim, envelope["data"]["id"])

    # Then the status is the requested one, with an error and no outputs
    assert data["status"] == expected
    assert data["error"]
    assert data["outputs"] == []


def test_nsfw_marker_flags_output_when_completed(sim: WaveSpeedSimulator) -> None:
    # Given / When a completed NSFW-marked task / Then its output is flagged
    data = completed_task(sim, "beach [sim:nsfw]")
    assert data["has_nsfw_contents"] == [True]
    assert len(data["outputs"]) == 1


def test_two_outputs_marker_serves_two_videos_when_completed(sim: WaveSpeedSimulator) -> None:
    # Given a task asking for two outputs
    data = completed_task(sim, "twins [sim:two-outputs]")

    # When downloading both
    bodies = [download(url)[2] for url in data["outputs"]]

    # Then both are distinct MP4s with the digests the simulator reports
    assert [url.rsplit("/", 1)[1] for url in data["outputs"]] == ["1.mp4", "2.mp4"]
    assert data["has_nsfw_contents"] == [False, False]
    for n, body in enumerate(bodies):
        assert looks_like_mp4(body[:32])
        assert hashlib.sha256(body).hexdigest() == sim.output_sha256(data["id"], n)
    assert bodies[0] != bodies[1]


# ------------------------------------------------------------------------------ downloads


def test_download_sends_video_headers_when_completed(make_sim: SimFactory) -> None:
    # Given a configured output size
    sim = make_sim(output_size=3_000_000)
    data = completed_task(sim, "big one")

    # When downloading the output
    status, headers, body = download(data["outputs"][0])

    # Then the headers describe a whole MP4 of that size and the bytes match
    assert status == 200
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Content-Length"] == "3000000"
    assert headers["Accept-Ranges"] == "bytes"
    assert len(body) == 3_000_000
    assert sum(size for _, size in parse_boxes(body)) == 3_000_000
    assert hashlib.sha256(body).hexdigest() == sim.output_sha256(data["id"])
    assert sim.stats()["downloads_completed"] == 1


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [("bytes=1000-", 1000, 1_999_999), ("bytes=10-19", 10, 19), ("bytes=-500", 1_999_500,
     1_999_999), ("bytes=1999999-", 1_999_999, 1_999_999)],
)  # fmt: skip
def test_range_request_returns_206_slice_when_satisfiable(
    make_sim: SimFactory, range_header: str, first: int, last: int
) -> None:
    # Given a 2 MB output
    sim = make_sim(output_size=2_000_000)
    data = completed_task(sim, "ranged")
    whole = b"".join(VideoBlob(2_000_000, variant=int(data["id"][:6], 16)).iter_bytes())

    # When requesting a byte range
    status, headers, body = download(data["outputs"][0], {"Range": range_header})

    # Then exactly that slice comes back as 206 with a Content-Range
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/2000000"
    assert headers["Content-Length"] == str(last - first + 1)
    assert body == whole[first : last + 1]


def test_range_request_returns_416_when_past_end(sim: WaveSpeedSimulator) -> None:
    # Given a completed task / When asking for bytes past the end / Then 416
    data = completed_task(sim, "short")
    size = sim.output_size(data["id"])
    status, headers, _ = download(data["outputs"][0], {"Range": f"bytes={size}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{size}"


def test_download_returns_404_when_task_not_completed(sim: WaveSpeedSimulator) -> None:
    # Given a task still generating / When fetching its output URL early / Then 404
    _, envelope = submit(sim, "not yet")
    status, _, _ = download(f"{sim.base_url}/predictions/{envelope['data']['id']}/1.mp4")
    assert status == 404
    assert sim.stats()["downloads_started"] == 0


def test_head_request_reports_size_without_counting_download(sim: WaveSpeedSimulator) -> None:
    # Given a completed task / When sending HEAD
    data = completed_task(sim, "head")
    status, headers, body = call(sim, "HEAD", data["outputs"][0].split(sim.host_port)[1])

    # Then headers come without a body and no download is counted
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(sim.output_size(data["id"]))
    assert sim.stats()["downloads_started"] == 0


def test_cut_once_marker_cuts_first_download_then_serves_whole(sim: WaveSpeedSimulator) -> None:
    # Given a task whose first download is cut
    data = completed_task(sim, "fragile [sim:cut-once]")
    url = data["outputs"][0]
    size = sim.output_size(data["id"])

    # When downloading twice
    first_status, first_headers, first_body = download(url)
    second_status, _, second_body = download(url)

    # Then the first promised the full length but delivered half; the second is whole
    assert first_status == -1
    assert first_headers["Content-Length"] == str(size)
    assert len(first_body) == size // 2
    assert second_status == 200
    assert hashlib.sha256(second_body).hexdigest() == sim.output_sha256(data["id"])
    stats = sim.stats()
    assert (stats["downloads_started"], stats["downloads_completed"]) == (2, 1)


def test_cut_once_download_resumes_when_range_requested(make_sim: SimFactory) -> None:
    # Given a large output whose first download is cut
    sim = make_sim(output_size=4_000_000)
    data = completed_task(sim, "resume me [sim:cut-once]")
    url = data["outputs"][0]
    _, _, partial = download(url)

    # When resuming from where the cut happened
    status, headers, rest = download(url, {"Range": f"bytes={len(partial)}-"})

    # Then the two pieces make the exact file
    assert len(partial) == 2_000_000
    assert status == 206
    assert headers["Content-Range"] == "bytes 2000000-3999999/4000000"
    assert hashlib.sha256(partial + rest).hexdigest() == sim.output_sha256(data["id"])


def test_truncate_marker_cuts_every_download(sim: WaveSpeedSimulator) -> None:
    # Given a task whose downloads are always cut
    data = completed_task(sim, "broken cdn [sim:truncate]")
    url = data["outputs"][0]
    size = sim.output_size(data["id"])

    # When downloading twice and then resuming with a Range
    attempts = [download(url) for _ in range(2)]
    range_status, _, range_body = download(url, {"Range": "bytes=100-"})

    # Then every response is short of its Content-Length, ranged ones too
    for status, headers, body in attempts:
        assert status == -1
        assert headers["Content-Length"] == str(size)
        assert len(body) == size // 2
    assert range_status == -1
    assert len(range_body) == (size - 100) // 2
    assert sim.stats()["downloads_completed"] == 0


def test_not_mp4_marker_serves_html_as_video_when_downloaded(sim: WaveSpeedSimulator) -> None:
    # Given a task whose output is not an MP4
    data = completed_task(sim, "bad cdn [sim:not-mp4]")

    # When downloading it
    status, headers, body = download(data["outputs"][0])

    # Then it claims to be video/mp4 but the bytes are an HTML page of a similar size
    assert status == 200
    assert headers["Content-Type"] == "video/mp4"
    assert body.startswith(b"<!DOCTYPE html>")
    assert not looks_like_mp4(body[:64])
    assert len(body) == VideoBlob.min_size()
    assert hashlib.sha256(body).hexdigest() == sim.output_sha256(data["id"])


# ------------------------------------------------------------------------------ submit faults


def test_429_once_marker_rejects_first_submit_then_accepts(sim: WaveSpeedSimulator) -> None:
    # Given a prompt asking for one rate-limit rejection
    prompt = "busy [sim:429-once]"

    # When submitting it twice
    first_status, first_body = submit(sim, prompt)
    second_status, second_body = submit(sim, prompt)

    # Then only the second creates a task
    assert first_status == 429 and first_body["code"] == 429 and first_body["data"] is None
    assert second_status == 200 and second_body["data"]["status"] == "created"
    stats = sim.stats()
    assert (stats["submit_requests"], stats["tasks_created"]) == (2, 1)


def test_code_1001_marker_returns_http_200_with_error_code(sim: WaveSpeedSimulator) -> None:
    # Given / When a submit with the business-error marker
    status, envelope = submit(sim, "odd [sim:code-1001]")

    # Then HTTP says 200 but the envelope says 1001, and no task exists
    assert status == 200
    assert envelope["code"] == 1001 and envelope["data"] is None and envelope["message"]
    assert sim.stats()["tasks_created"] == 0


def test_500_submit_marker_returns_500_without_task(sim: WaveSpeedSimulator) -> None:
    # Given / When a submit with the server-error marker / Then 500 and no task
    status, envelope = submit(sim, "boom [sim:500-submit]")
    assert status == 500 and envelope["code"] == 500
    assert sim.stats()["tasks_created"] == 0


def test_slow_submit_marker_creates_task_when_client_times_out(sim: WaveSpeedSimulator) -> None:
    # Given a client that gives up after 0.2 s, and a submit held back for 0.6 s
    # When submitting / Then the client times out...
    with pytest.raises(TimeoutError):
        submit(sim, "tortoise [sim:slow-submit]", timeout=0.2)

    # ...yet the paid task exists and eventually completes
    (task,) = sim.tasks()
    assert sim.stats()["tasks_created"] == 1
    assert wait_terminal(sim, task["id"])["status"] == "completed"


def test_slow_submit_marker_answers_created_when_client_waits(sim: WaveSpeedSimulator) -> None:
    # Given a patient client / When submitting a slow prompt
    started = time.monotonic()
    status, envelope = submit(sim, "patience [sim:slow-submit]", timeout=5)

    # Then the answer arrives after the delay and still says "created"
    assert time.monotonic() - started >= 0.55
    assert status == 200 and envelope["data"]["status"] == "created"


def test_drop_submit_marker_creates_task_when_connection_dropped(sim: WaveSpeedSimulator) -> None:
    # Given / When a submit whose connection is dropped without an answer
    with pytest.raises(http.client.RemoteDisconnected):
        submit(sim, "vanish [sim:drop-submit]")

    # Then the task was nevertheless created and counted
    assert sim.stats()["tasks_created"] == 1
    assert sim.tasks()[0]["prompt"] == "vanish [sim:drop-submit]"


def test_sdk_reports_ambiguous_submit_when_connection_dropped(sim: WaveSpeedSimulator) -> None:
    # Given the SDK / When its submit is dropped / Then it raises without retrying the POST
    client = wavespeed.Client(api_key=KEY, base_url=sim.base_url)
    with pytest.raises(RuntimeError, match="did not return a response"):
        client.run(MODEL, {"prompt": "gone [sim:drop-submit]"}, poll_interval=0.1)
    assert sim.stats()["submit_requests"] == 1


def test_submit_429_rate_rejects_without_creating_tasks(make_sim: SimFactory) -> None:
    # Given a simulator that rate-limits every submit
    sim = make_sim(submit_429_rate=1.0)

    # When submitting three times
    statuses = [submit(sim, f"try {i}")[0] for i in range(3)]

    # Then all are 429 and nothing was paid for
    assert statuses == [429, 429, 429]
    assert sim.stats()["submit_requests"] == 3
    assert sim.stats()["tasks_created"] == 0
    assert sim.tasks() == []


def test_max_concurrency_queues_task_when_cap_reached(make_sim: SimFactory) -> None:
    # Given a cap of one processing task (WaveSpeed queues the rest: "it will wait")
    sim = make_sim(max_concurrency=1)
    _, first = submit(sim, "first")

    # When a second task is submitted while the first runs
    busy_status, busy = submit(sim, "second")
    first_done = wait_terminal(sim, first["data"]["id"])
    second_when_first_done = result(sim, busy["data"]["id"])[1]["data"]["status"]
    second_done = wait_terminal(sim, busy["data"]["id"])

    # Then it is accepted (and paid), waits in "created" until the slot frees, then completes
    assert busy_status == 200 and busy["data"]["status"] == "created"
    assert first_done["status"] == "completed"
    assert second_when_first_done in {"created", "processing"}
    assert second_done["status"] == "completed"
    assert sim.stats()["tasks_created"] == 2


def test_seeded_random_faults_repeat_when_seed_reused(make_sim: SimFactory) -> None:
    # Given two simulators with the same seed and a 50 % failure rate
    outcomes = []
    for _ in range(2):
        sim = make_sim(seed=7, fail_rate=0.5, generation_seconds=0.0, processing_after_seconds=0.0)
        ids = [submit(sim, f"p{i}")[1]["data"]["id"] for i in range(12)]
        outcomes.append([wait_terminal(sim, task_id)["status"] for task_id in ids])

    # Then both produce the same mix of outcomes
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {"completed", "failed"}


def test_fault_rates_apply_per_task_when_set_to_one(make_sim: SimFactory) -> None:
    # Given every task cut once and every poll answering 5xx
    sim = make_sim(cut_once_rate=1.0, poll_5xx_rate=1.0, generation_seconds=0.0)
    _, envelope = submit(sim, "unlucky")
    task_id = envelope["data"]["id"]

    # When polling and downloading
    poll_status, _ = result(sim, task_id)
    url = f"{sim.base_url}/predictions/{task_id}/1.mp4"
    first, second = download(url)[0], download(url)[0]

    # Then the poll failed with a 5xx and the first download was cut
    assert 500 <= poll_status < 600
    assert (first, second) == (-1, 200)


# ------------------------------------------------------------------------------ polling faults


def test_poll_500_once_marker_fails_first_result_then_recovers(sim: WaveSpeedSimulator) -> None:
    # Given a task marked for one failing poll
    _, envelope = submit(sim, "flaky poll [sim:poll-500-once]")
    task_id = envelope["data"]["id"]

    # When polling twice
    first_status, first = result(sim, task_id)
    second_status, second = result(sim, task_id)

    # Then only the first answer is a 500
    assert first_status == 500 and first["code"] == 500
    assert second_status == 200 and second["data"]["id"] == task_id


def test_sdk_completes_when_first_poll_fails(
    sim: WaveSpeedSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the SDK with a fast retry interval / When the first poll answers 500
    client = wavespeed.Client(api_key=KEY, base_url=sim.base_url, retry_interval=0.05)
    output = client.run(MODEL, {"prompt": "retry [sim:poll-500-once]"}, poll_interval=0.1)

    # Then it retried the GET (not the POST) and got the video
    assert len(output["outputs"]) == 1
    assert sim.stats()["submit_requests"] == 1
    assert "HTTP 500" in capsys.readouterr().out


# ------------------------------------------------------------------------------ prompt optimizer


def test_optimizer_returns_enhanced_prompt_when_sync(sim: WaveSpeedSimulator) -> None:
    # Given a sync optimizer request
    body = {"text": "a cat on a roof", "mode": "video", "enable_sync_mode": True}

    # When calling it twice
    first_status, first = call_json(sim, "POST", OPTIMIZER_PATH, body)
    _, second = call_json(sim, "POST", OPTIMIZER_PATH, body)

    # Then it is completed at once, extends the text deterministically, and is not a paid video
    assert first_status == 200 and first["code"] == 200
    data = first["data"]
    assert data["status"] == "completed"
    (enhanced,) = data["outputs"]
    assert enhanced.startswith("a cat on a roof ")
    assert len(enhanced) > len("a cat on a roof") + 20
    assert second["data"]["outputs"] == [enhanced]
    stats = sim.stats()
    assert stats["optimizer_requests"] == 2
    assert (stats["submit_requests"], stats["tasks_created"]) == (0, 0)


def test_optimizer_keeps_markers_when_enhancing(sim: WaveSpeedSimulator) -> None:
    # Given text carrying a simulator marker / When optimising
    body = {"text": "storm [sim:fail]", "mode": "video", "enable_sync_mode": True}
    _, envelope = call_json(sim, "POST", OPTIMIZER_PATH, body)

    # Then the marker survives, so it still reaches the video submit
    assert "[sim:fail]" in envelope["data"]["outputs"][0]


def test_optimizer_async_result_available_when_polled(sim: WaveSpeedSimulator) -> None:
    # Given an async optimizer request / When polling its id / Then the result is there
    _, envelope = call_json(sim, "POST", OPTIMIZER_PATH, {"text": "sunset", "mode": "image"})
    assert envelope["data"]["status"] == "created"
    status, polled = result(sim, envelope["data"]["id"])
    assert status == 200 and polled["data"]["status"] == "completed"
    assert polled["data"]["outputs"][0].startswith("sunset ")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": "x [sim:optimizer-fail]", "mode": "video", "enable_sync_mode": True}, 500),
        ({"mode": "video", "enable_sync_mode": True}, 400),
        ({"text": "x", "mode": "audio", "enable_sync_mode": True}, 400),
    ],
)
def test_optimizer_returns_error_when_failing_or_invalid(
    sim: WaveSpeedSimulator, body: dict[str, Any], status: int
) -> None:
    # Given a failing or invalid request / When optimising / Then an error envelope answers
    got_status, envelope = call_json(sim, "POST", OPTIMIZER_PATH, body)
    assert got_status == status
    assert envelope["code"] == status and envelope["data"] is None


# ------------------------------------------------------------------------------ stats & lifecycle


def test_stats_count_each_kind_of_request_when_exercised(sim: WaveSpeedSimulator) -> None:
    # Given a mix of traffic
    call(sim, "POST", MODEL_PATH, {"prompt": "x"}, key=None)
    submit(sim, "bad", duration=3)
    submit(sim, "limited [sim:429-once]")
    data = completed_task(sim, "good")
    download(data["outputs"][0])
    call(sim, "POST", OPTIMIZER_PATH, {"text": "t", "mode": "video", "enable_sync_mode": True})
    polls = sim.stats()["result_requests"]

    # When reading the counters via HTTP and Python
    with urllib.request.urlopen(f"{sim.base_url}/_sim/stats", timeout=5) as response:
        over_http = json.loads(response.read())

    # Then they agree and count exactly what happened
    assert over_http == sim.stats()
    assert over_http == {
        "submit_requests": 4,
        "tasks_created": 1,
        "optimizer_requests": 1,
        "result_requests": polls,
        "downloads_started": 1,
        "downloads_completed": 1,
        "unauthorized": 1,
    }
    assert polls >= 1


def test_tasks_lists_prompt_status_and_outputs(sim: WaveSpeedSimulator) -> None:
    # Given one completed and one failing task
    done = completed_task(sim, "listed")
    _, failing = submit(sim, "listed too [sim:fail]")

    # When listing tasks
    tasks = sim.tasks()

    # Then both appear in order with their own state
    assert [t["prompt"] for t in tasks] == ["listed", "listed too [sim:fail]"]
    assert tasks[0]["id"] == done["id"] and tasks[0]["status"] == "completed"
    assert tasks[0]["outputs"] == done["outputs"]
    assert tasks[1]["id"] == failing["data"]["id"] and tasks[1]["outputs"] == []
    assert set(tasks[0]) >= {"id", "prompt", "status", "outputs", "created_at"}


def test_stop_releases_port_when_context_exits() -> None:
    # Given a simulator used as a context manager
    with WaveSpeedSimulator(SimulatorConfig(generation_seconds=0.1)) as sim:
        port = sim.port
        assert call_json(sim, "GET", "/_sim/stats")[0] == 200

    # When the block exits / Then nothing listens on that port any more
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_stop_returns_quickly_when_handler_is_sleeping(make_sim: SimFactory) -> None:
    # Given a slow submit in flight (30 s hold-back)
    sim = make_sim(slow_submit_seconds=30.0)
    with pytest.raises(TimeoutError):
        submit(sim, "stuck [sim:slow-submit]", timeout=0.2)

    # When stopping / Then it does not wait for the sleeping handler
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2.0


def test_cli_prints_base_url_and_serves_until_interrupted() -> None:
    # Given the CLI on a free port
    env = dict(os.environ, PYTHONPATH=str(Path(kling_local.__file__).resolve().parent.parent))
    process = subprocess.Popen(
        [sys.executable, "-m", "kling_local.simulator", "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        # When reading its banner and calling the printed URL
        assert process.stdout is not None
        banner = process.stdout.readline()
        base_url = banner.split()[4]
        request = urllib.request.Request(
            f"{base_url}/api/v3/predictions/nope/result",
            headers={"Authorization": "Bearer cli-key"},
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=5)
        missing.value.close()

        # Then it names the URL and key, answers with the configured key, and exits on Ctrl-C
        assert base_url.startswith("http://127.0.0.1:") and "cli-key" in banner
        assert missing.value.code == 404
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
