"""Integration tests: WaveSpeedClient over real HTTP against the simulator and a scripted API."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kling_local.simulator import WaveSpeedSimulator
from kling_local.simulator.config import Outage
from kling_pipeline import MODEL_ID
from kling_pipeline.errors import PermanentError, SubmitOutcomeUnknown, TransientError
from kling_pipeline.job.request import JobRequest
from kling_pipeline.job.workflow import WorkflowState
from kling_pipeline.poll import poll_prediction
from kling_pipeline.wavespeed import RetryPolicy, ThrottledSubmit, WaveSpeedClient
from kling_pipeline.wavespeed_history import PredictionHistory
from tests.conftest import SimFactory

KEY = "sim-test-key"
ATTEMPTS = 3
Reply = tuple[int, dict[str, str], Any]


#: Simulator settings of this module's `make_sim` / `sim` fixtures (tests/conftest.py).
SIM_DEFAULTS: dict[str, Any] = {
    "generation_seconds": 0.3,
    "processing_after_seconds": 0.05,
    "slow_submit_seconds": 5.0,
}


class Client:
    """A WaveSpeedClient whose sleeps are recorded instead of slept."""

    def __init__(
        self, base_url: str, *, key: str = KEY, submit_timeout_s: float = 5.0, cap_s: float = 8.0
    ) -> None:
        self.sleeps: list[float] = []
        self.api = WaveSpeedClient(
            base_url,
            lambda: key,
            timeout_s=5.0,
            submit_timeout_s=submit_timeout_s,
            retry=RetryPolicy(attempts=ATTEMPTS, base_s=0.5, cap_s=cap_s),
            sleep=self.sleeps.append,
            rng=random.Random(1),
        )


def submit_counts(sim: WaveSpeedSimulator) -> tuple[int, int]:
    stats = sim.stats()
    return stats["submit_requests"], stats["tasks_created"]


class _ScriptedServer(ThreadingHTTPServer):
    replies: list[Reply]
    requests: list[tuple[str, str]]


class _ScriptedHandler(BaseHTTPRequestHandler):
    """Answers each request with the next scripted reply (the last one repeats)."""

    protocol_version = "HTTP/1.1"
    server: _ScriptedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append((self.command, self.path))
        replies = self.server.replies
        status, headers, payload = replies.pop(0) if len(replies) > 1 else replies[0]
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Reply]], _ScriptedServer]]:
    """A stand-in API for answers the simulator does not give (Retry-After headers)."""
    servers: list[_ScriptedServer] = []

    def start(replies: list[Reply]) -> _ScriptedServer:
        server = _ScriptedServer(("127.0.0.1", 0), _ScriptedHandler)
        server.replies, server.requests = list(replies), []
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def base_of(server: _ScriptedServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def created(prediction_id: str) -> Reply:
    data = {"id": prediction_id, "status": "created", "outputs": []}
    return 200, {}, {"code": 200, "message": "success", "data": data}


def throttled(retry_after: str | None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return 429, headers, {"code": 429, "message": "Too many requests", "data": None}


# ------------------------------------------------------------------------------ submit


def test_submit_returns_prediction_id_when_accepted(sim: WaveSpeedSimulator) -> None:
    # Given a valid job
    job = JobRequest(prompt="a heron at dawn", aspect_ratio="1:1", duration=10, guidance_scale=0.7)
    client = Client(sim.base_url)

    # When submitting it
    prediction_id = client.api.submit_generation(job.identified("heron-1").api_payload())

    # Then exactly one task exists, with that id and the job's parameters
    (task,) = sim.tasks()
    assert prediction_id == task["id"]
    assert task["input"]["prompt"] == "a heron at dawn"
    assert (task["input"]["aspect_ratio"], task["input"]["duration"]) == ("1:1", 10)
    assert task["input"]["guidance_scale"] == 0.7
    assert submit_counts(sim) == (1, 1)
    assert client.sleeps == []


def test_submit_raises_permanent_when_key_wrong(sim: WaveSpeedSimulator) -> None:
    # Given a client with a wrong API key
    client = Client(sim.base_url, key="not-the-key")

    # When submitting
    with pytest.raises(PermanentError) as caught:
        client.api.submit_generation({"prompt": "a fox"})

    # Then it is a permanent rejection (not an ambiguous one), sent once, nothing paid
    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert caught.value.code == "api_rejected"
    assert "401" in caught.value.message
    assert submit_counts(sim) == (1, 0)
    assert sim.stats()["unauthorized"] == 1


def test_submit_raises_api_rejected_when_envelope_code_not_200(sim: WaveSpeedSimulator) -> None:
    # Given a prompt the API answers with HTTP 200 but envelope code 1001
    client = Client(sim.base_url)

    # When submitting it
    with pytest.raises(PermanentError) as caught:
        client.api.submit_generation({"prompt": "odd [sim:code-1001]"})

    # Then it is a permanent api_rejected naming the code, with no task and no resend
    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert caught.value.code == "api_rejected"
    assert "1001" in caught.value.message
    assert submit_counts(sim) == (1, 0)
    assert sim.tasks() == []


def test_submit_raises_api_rejected_when_input_invalid(sim: WaveSpeedSimulator) -> None:
    # Given / When a body the API refuses with 400
    client = Client(sim.base_url)
    with pytest.raises(PermanentError) as caught:
        client.api.submit_generation({"prompt": "x", "duration": 7})

    # Then permanent, sent once, nothing created
    assert caught.value.code == "api_rejected"
    assert submit_counts(sim) == (1, 0)


def test_submit_retried_once_when_rate_limited_once(sim: WaveSpeedSimulator) -> None:
    # Given a prompt the API rate-limits on its first submit only
    client = Client(sim.base_url)

    # When submitting it
    prediction_id = client.api.submit_generation({"prompt": "busy [sim:429-once]"})

    # Then the POST was sent twice, after one backoff, and exactly one task was created
    assert submit_counts(sim) == (2, 1)
    assert sim.tasks()[0]["id"] == prediction_id
    assert len(client.sleeps) == 1
    assert 0 <= client.sleeps[0] <= 0.5  # full jitter over base * 2**0


def test_submit_raises_throttled_when_rate_limit_persists(make_sim: SimFactory) -> None:
    # Given an API rate-limiting every submit
    sim = make_sim(submit_429_rate=1.0)
    client = Client(sim.base_url)

    # When submitting
    with pytest.raises(ThrottledSubmit) as caught:
        client.api.submit_generation({"prompt": "a fox"})

    # Then it gives up after `attempts` POSTs as a transient error, nothing paid
    assert isinstance(caught.value, TransientError)
    assert caught.value.code == "rate_limited"
    assert submit_counts(sim) == (ATTEMPTS, 0)
    assert len(client.sleeps) == ATTEMPTS - 1
    assert all(0 <= s <= min(8.0, 0.5 * 2**n) for n, s in enumerate(client.sleeps))


def test_submit_outcome_unknown_when_api_answers_500(sim: WaveSpeedSimulator) -> None:
    # Given a prompt the API answers with HTTP 500
    client = Client(sim.base_url)

    # When submitting it
    with pytest.raises(SubmitOutcomeUnknown) as caught:
        client.api.submit_generation({"prompt": "boom [sim:500-submit]"})

    # Then the outcome is reported unknown and the POST is never re-sent
    assert caught.value.code == "submit_outcome_unknown"
    assert sim.stats()["submit_requests"] == 1
    assert client.sleeps == []


def test_submit_never_resent_when_connection_dropped(sim: WaveSpeedSimulator) -> None:
    # Given a prompt whose submit the API accepts, then hangs up without answering
    client = Client(sim.base_url)

    # When submitting it
    with pytest.raises(SubmitOutcomeUnknown):
        client.api.submit_generation({"prompt": "vanish [sim:drop-submit]"})

    # Then the paid task exists once, from exactly one POST
    assert submit_counts(sim) == (1, 1)
    assert client.sleeps == []

    # And the client stays usable for the next job
    client.api.submit_generation({"prompt": "next one"})
    assert submit_counts(sim) == (2, 2)


def test_submit_outcome_unknown_when_answer_slower_than_timeout(make_sim: SimFactory) -> None:
    # Given an API that holds the submit answer for 5 s, and a client waiting 0.3 s
    sim = make_sim(slow_submit_seconds=5.0)
    client = Client(sim.base_url, submit_timeout_s=0.3)

    # When submitting
    with pytest.raises(SubmitOutcomeUnknown):
        client.api.submit_generation({"prompt": "tortoise [sim:slow-submit]"})

    # Then one POST was sent, not repeated, and its task does exist
    assert submit_counts(sim) == (1, 1)
    assert client.sleeps == []


def test_submit_raises_throttled_when_connection_refused() -> None:
    # Given a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}")

    # When submitting
    with pytest.raises(ThrottledSubmit) as caught:
        client.api.submit_generation({"prompt": "a fox"})

    # Then it tried `attempts` times (a backoff between each) and reports a transient failure
    assert caught.value.code == "api_unreachable"
    assert len(client.sleeps) == ATTEMPTS - 1


def test_submit_honours_retry_after_when_rate_limited(
    scripted: Callable[[list[Reply]], _ScriptedServer],
) -> None:
    # Given an API answering 429 with Retry-After 3, then 429 with Retry-After 600, then 200
    server = scripted([throttled("3"), throttled("600"), created("pred-1")])
    client = Client(base_of(server), cap_s=8.0)

    # When submitting
    prediction_id = client.api.submit_generation({"prompt": "a fox"})

    # Then it waited what the API asked, bounded by the policy cap, and got the id
    assert prediction_id == "pred-1"
    assert client.sleeps == [3.0, 8.0]
    assert [method for method, _ in server.requests] == ["POST"] * 3


# ------------------------------------------------------------------------------ status reads


def test_read_prediction_reads_status_when_task_exists(sim: WaveSpeedSimulator) -> None:
    # Given a submitted task
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "a fox"})

    # When reading its status
    prediction = client.api.read_prediction(prediction_id)

    # Then it is the same prediction, in progress, read with one GET
    assert prediction.id == prediction_id
    assert prediction.status in {"created", "processing"}
    assert prediction.outputs == []
    assert sim.stats()["result_requests"] == 1


def test_read_prediction_recovers_when_one_poll_fails(sim: WaveSpeedSimulator) -> None:
    # Given a task whose first status read answers 500
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "flaky [sim:poll-500-once]"})

    # When reading its status
    prediction = client.api.read_prediction(prediction_id)

    # Then the GET was retried once after a backoff and the status came back
    assert prediction.id == prediction_id
    assert sim.stats()["result_requests"] == 2
    assert len(client.sleeps) == 1
    assert sim.stats()["submit_requests"] == 1


def test_read_prediction_raises_transient_when_5xx_persists(make_sim: SimFactory) -> None:
    # Given an API whose status reads always fail with a 5xx
    sim = make_sim(poll_5xx_rate=1.0)
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "a fox"})

    # When reading the status
    with pytest.raises(TransientError) as caught:
        client.api.read_prediction(prediction_id)

    # Then it gave up after `attempts` GETs, with a backoff between each
    assert caught.value.code in {"http_500", "http_502", "http_503"}
    assert sim.stats()["result_requests"] == ATTEMPTS
    assert len(client.sleeps) == ATTEMPTS - 1
    assert all(0 <= s <= min(8.0, 0.5 * 2**n) for n, s in enumerate(client.sleeps))


def test_read_prediction_raises_permanent_when_prediction_unknown(
    sim: WaveSpeedSimulator,
) -> None:
    # Given / When reading a prediction that does not exist
    client = Client(sim.base_url)
    with pytest.raises(PermanentError) as caught:
        client.api.read_prediction("doesnotexist")

    # Then it is permanent and not retried
    assert caught.value.code == "api_rejected"
    assert sim.stats()["result_requests"] == 1
    assert client.sleeps == []


def test_read_prediction_raises_permanent_when_key_wrong(sim: WaveSpeedSimulator) -> None:
    # Given / When reading a status with a wrong key / Then permanent, not retried
    with pytest.raises(PermanentError) as caught:
        Client(sim.base_url, key="wrong").api.read_prediction("abc")
    assert "401" in caught.value.message
    assert sim.stats()["unauthorized"] == 1


def test_read_prediction_raises_transient_when_api_unreachable() -> None:
    # Given a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}")

    # When reading a status / Then it retries, then raises a transient error
    with pytest.raises(TransientError) as caught:
        client.api.read_prediction("abc")
    assert caught.value.code == "api_unreachable"
    assert len(client.sleeps) == ATTEMPTS - 1


def test_read_prediction_honours_retry_after_when_rate_limited(
    scripted: Callable[[list[Reply]], _ScriptedServer],
) -> None:
    # Given an API answering the status read with 429 + Retry-After 2, then with the status
    server = scripted([throttled("2"), created("pred-9")])
    client = Client(base_of(server))

    # When reading the status
    prediction = client.api.read_prediction("pred-9")

    # Then it slept exactly what the API asked before the second GET
    assert prediction.status == "created"
    assert client.sleeps == [2.0]
    assert [method for method, _ in server.requests] == ["GET", "GET"]


def test_read_prediction_backs_off_with_jitter_when_retry_after_absent(
    scripted: Callable[[list[Reply]], _ScriptedServer],
) -> None:
    # Given an API answering 429 without Retry-After twice, then the status
    server = scripted([throttled(None), throttled("soon"), created("pred-3")])
    client = Client(base_of(server))

    # When reading the status
    client.api.read_prediction("pred-3")

    # Then the waits are full-jitter exponential: within [0, base * 2**attempt]
    assert len(client.sleeps) == 2
    assert 0 <= client.sleeps[0] <= 0.5
    assert 0 <= client.sleeps[1] <= 1.0


# ------------------------------------------------------------------------------ prompt optimizer


def test_enhance_prompt_returns_longer_prompt_when_optimizer_ok(sim: WaveSpeedSimulator) -> None:
    # Given the optimizer / When enhancing a short prompt
    enhanced = Client(sim.base_url).api.enhance_prompt("a cat on a roof")

    # Then the prompt comes back extended, and no video task was paid for
    assert enhanced.startswith("a cat on a roof ")
    assert len(enhanced) > len("a cat on a roof") + 20
    assert sim.stats()["optimizer_requests"] == 1
    assert submit_counts(sim) == (0, 0)


def test_enhance_prompt_raises_when_optimizer_fails(sim: WaveSpeedSimulator) -> None:
    # Given / When the optimizer answers 500
    with pytest.raises(TransientError) as caught:
        Client(sim.base_url).api.enhance_prompt("x [sim:optimizer-fail]")

    # Then a transient error says so, and nothing was submitted
    assert caught.value.code == "http_500"
    assert "prompt optimizer" in caught.value.message
    assert submit_counts(sim) == (0, 0)


# ------------------------------------------------------------------------------ poll step


def poll_state(prediction_id: str, *, deadline_in_s: float, polls: int = 0) -> WorkflowState:
    now = time.time()
    return WorkflowState.from_dict(
        {
            "job": {"job_id": "job-1", "input": {"prompt": "p"}, "source": {"type": "sqs"}},
            "prediction": {"id": prediction_id, "submitted_at": now},
            "schedule": {"interval_s": 15, "min_interval_s": 5, "deadline_at": now + deadline_in_s},
            "poll": {"status": "waiting", "wait_seconds": 1, "polls": polls},
        }
    )


@pytest.mark.parametrize(
    ("marker", "code", "words"),
    [
        ("[sim:fail]", "generation_failed", "Simulated generation failure"),
        ("[sim:cancel]", "generation_cancelled", "cancelled"),
        ("[sim:timeout]", "generation_timeout", "timed out"),
    ],
)
def test_poll_step_reports_the_api_failure_when_the_simulator_ends_a_task_badly(
    make_sim: SimFactory, marker: str, code: str, words: str
) -> None:
    # Given a task the API ends as failed, cancelled or timed out
    sim = make_sim(generation_seconds=0.0, processing_after_seconds=0.0)
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": f"doomed {marker}"})

    # When the poll step reads and judges it
    poll = poll_prediction(poll_state(prediction_id, deadline_in_s=3600), client.api)

    # Then one status read was made and the job fails with the API's status and message
    assert sim.stats()["result_requests"] == 1
    assert poll.status == "failed" and poll.error is not None
    assert poll.error.code == code
    assert words in poll.error.message


def test_poll_step_waits_with_the_read_status_when_the_task_is_still_running(
    make_sim: SimFactory,
) -> None:
    # Given a task that takes an hour
    sim = make_sim(generation_seconds=3600, processing_after_seconds=0.0)
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "a slow sunrise"})

    # When the poll step checks it for the third time
    poll = poll_prediction(poll_state(prediction_id, deadline_in_s=3600, polls=2), client.api)

    # Then it waits the schedule's interval, having read the simulator's status once
    assert (poll.status, poll.polls, poll.last_status) == ("waiting", 3, "processing")
    assert poll.wait_seconds == 15
    assert sim.stats()["result_requests"] == 1


# ------------------------------------------------------------------ the real service's shapes


def prediction_reply(**fields: Any) -> Reply:
    data = {"id": "p-1", "status": "completed", "outputs": ["https://cdn.example/1.mp4"]}
    data.update(fields)
    return 200, {}, {"code": 200, "message": "success", "data": data}


@pytest.mark.parametrize(
    ("raw", "flags", "run_ms"),
    [
        ({"has_nsfw_contents": [False], "executionTime": 12}, [False], 12.0),
        ({"has_nsfw_contents": ["false"], "executionTime": "12ms"}, [False], 12.0),
        ({"has_nsfw_contents": "false", "executionTime": "1.5s"}, [False], 1500.0),
        ({"has_nsfw_contents": None, "executionTime": None}, [False], 0.0),
        ({"has_nsfw_contents": [], "executionTime": "soon"}, [False], 0.0),
        ({"has_nsfw_contents": True, "executionTime": [1]}, [True], 0.0),
        ({"has_nsfw_contents": ["true"], "executionTime": 3.5}, [True], 3.5),
        ({"has_nsfw_contents": [{"score": 0.9}]}, [True], 0.0),
    ],
)
def test_read_prediction_reads_leniently_when_fields_have_other_shapes(
    scripted: Callable[[list[Reply]], _ScriptedServer],
    raw: dict[str, Any],
    flags: list[bool],
    run_ms: float,
) -> None:
    # Given an API answering a finished prediction with one of the shapes seen in the wild
    server = scripted([prediction_reply(**raw)])

    # When reading it
    prediction = Client(base_of(server)).api.read_prediction("p-1")

    # Then the job is not failed: clean shapes stay clean, unknown ones count as flagged
    assert prediction.status == "completed"
    assert prediction.has_nsfw_contents == flags
    assert prediction.execution_time_ms == run_ms


def test_read_prediction_reads_task_code_and_creation_time_when_task_failed(
    make_sim: SimFactory,
) -> None:
    # Given a task the simulator fails for content moderation
    sim = make_sim(generation_seconds=0.0, processing_after_seconds=0.0)
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "refused [sim:moderation]"})

    # When reading it
    prediction = client.api.read_prediction(prediction_id)

    # Then WaveSpeed's data.code and the task's creation time come with it
    assert (prediction.status, prediction.code) == ("failed", 1200)
    assert prediction.created_at.startswith("20")


@pytest.mark.parametrize("form", ["http", "code"])
def test_read_prediction_raises_transient_when_api_in_outage(
    make_sim: SimFactory, form: str
) -> None:
    # Given an outage answering status reads with HTTP 503 or with envelope code 5003
    sim = make_sim(outages=(Outage(0, 3600, on="result", form=form),))
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "a fox"})

    # When reading the status / Then it is transient (retried), never a verdict on the task
    with pytest.raises(TransientError):
        client.api.read_prediction(prediction_id)
    assert sim.stats()["result_requests"] == ATTEMPTS


def test_submit_raises_not_activated_when_key_never_topped_up(make_sim: SimFactory) -> None:
    # Given an account whose key was never activated by a top-up
    sim = make_sim(activated=False)

    # When submitting / Then the refusal has its own code and nothing was created
    with pytest.raises(PermanentError) as caught:
        Client(sim.base_url).api.submit_generation({"prompt": "a fox"})
    assert caught.value.code == "api_key_not_activated"
    assert submit_counts(sim)[1] == 0


def test_submit_raises_insufficient_balance_when_credit_short(make_sim: SimFactory) -> None:
    # Given an account with less credit than one video costs
    sim = make_sim(balance_usd=1.0)

    # When submitting / Then the refusal has its own code and nothing was created
    with pytest.raises(PermanentError) as caught:
        Client(sim.base_url).api.submit_generation({"prompt": "a fox"})
    assert caught.value.code == "insufficient_balance"
    assert submit_counts(sim)[1] == 0


def test_recent_predictions_lists_task_when_created_in_window(sim: WaveSpeedSimulator) -> None:
    # Given one task created just now
    client = Client(sim.base_url)
    prediction_id = client.api.submit_generation({"prompt": "a fox"})
    now = datetime.now(UTC)

    # When listing the history around now, and an hour ago
    found = PredictionHistory(client.api).recent_predictions(
        model=MODEL_ID,
        created_after=(now - timedelta(minutes=1)).isoformat(),
        created_before=(now + timedelta(minutes=1)).isoformat(),
    )
    earlier = PredictionHistory(client.api).recent_predictions(
        model=MODEL_ID,
        created_after=(now - timedelta(hours=2)).isoformat(),
        created_before=(now - timedelta(hours=1)).isoformat(),
    )

    # Then the task is listed in its window only
    assert [item["id"] for item in found] == [prediction_id]
    assert earlier == []


def test_balance_reads_credit_when_asked(make_sim: SimFactory) -> None:
    # Given an account with $12.50 of credit / When reading the balance / Then it is reported
    sim = make_sim(balance_usd=12.5)
    assert PredictionHistory(Client(sim.base_url).api).balance_usd() == 12.5


# ------------------------------------------------------------------------------ hostile answers


@pytest.mark.parametrize("payload", [["a", "list"], None, b"\xff\xfe not utf-8", b"", 7])
def test_submit_is_a_clear_refusal_when_a_4xx_body_is_not_an_object(
    scripted: Callable[[list[Reply]], _ScriptedServer], payload: Any
) -> None:
    # Given an API refusing the submit with a body that is not a JSON object
    server = scripted([(400, {}, payload)])

    # When submitting / Then it is a permanent refusal (nothing was created), sent once
    with pytest.raises(PermanentError) as caught:
        Client(base_of(server)).api.submit_generation({"prompt": "a fox"})
    assert caught.value.code == "api_rejected"
    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert [method for method, _ in server.requests] == ["POST"]


@pytest.mark.parametrize("prediction_id", ["../../admin", "a b", "x" * 129, "", 12, None])
def test_submit_outcome_is_unknown_when_the_prediction_id_is_not_usable(
    scripted: Callable[[list[Reply]], _ScriptedServer], prediction_id: Any
) -> None:
    # Given an API accepting the submit but answering an id unfit for a URL path or a tag
    data = {"id": prediction_id, "status": "created"}
    server = scripted([(200, {}, {"code": 200, "message": "success", "data": data})])

    # When submitting / Then the outcome is unknown (a task may exist): never resubmitted
    with pytest.raises(SubmitOutcomeUnknown):
        Client(base_of(server)).api.submit_generation({"prompt": "a fox"})
    assert len(server.requests) == 1


def test_submit_error_masks_the_key_when_the_api_echoes_the_authorization_header(
    scripted: Callable[[list[Reply]], _ScriptedServer],
) -> None:
    # Given a proxy echoing the request's Authorization header in its error
    server = scripted([(400, {}, {"code": 400, "message": f"bad: Authorization: Bearer {KEY}"})])

    # When submitting / Then the error names the refusal but not the key
    with pytest.raises(PermanentError) as caught:
        Client(base_of(server)).api.submit_generation({"prompt": "a fox"})
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message
