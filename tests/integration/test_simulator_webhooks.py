"""Integration tests: the simulator delivers WaveSpeed webhooks (signed v3) to a real local
receiver, with each fault class (lost, duplicated, delayed, forged, replayed, out of order),
retries, URL validation and the record tests and the soak read."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from kling_local.simulator import MARKERS, MODEL, SimulatorConfig, WaveSpeedSimulator
from kling_local.simulator.__main__ import config_from_args, parse_args
from kling_local.simulator.webhooks import FORGED_OUTPUT, MAX_URL_LENGTH, REPLAY_AGE_SECONDS
from kling_pipeline.webhook_auth import TOLERANCE_S, WebhookRefused, verify
from tests.conftest import SimFactory
from tests.integration.test_simulator import MODEL_PATH, call_json, wait_terminal

#: Simulator settings of this module's `make_sim` fixture (tests/conftest.py): quick tasks,
#: and a service clock fast enough that retries and delays take a fraction of a second.
SIM_DEFAULTS: dict[str, Any] = {
    "generation_seconds": 0.2,
    "processing_after_seconds": 0.05,
    "time_scale": 0.05,
}
SECRET = SimulatorConfig.webhook_secret
WAIT_S = 15.0
README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class Arrival:
    """One POST as the receiver saw it (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class Receiver:
    """A tiny stdlib HTTP endpoint that records every POST and answers scripted statuses."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.answers: list[int] = []  # answered in order; 200 once they run out
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.arrivals.append(Arrival(self.path, headers, body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wavespeed"

    def received(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def submit_with_webhook(
    sim: WaveSpeedSimulator, prompt: str, url: str, **extra: Any
) -> tuple[int, dict[str, Any]]:
    path = f"{MODEL_PATH}?webhook={quote(url, safe='')}"
    return call_json(sim, "POST", path, {"prompt": prompt, **extra})


def run_task(sim: WaveSpeedSimulator, prompt: str, url: str) -> str:
    """Submit with a webhook and wait until every webhook of the simulator was delivered."""
    status, answer = submit_with_webhook(sim, prompt, url)
    assert status == 200, answer
    assert sim.wait_for_webhooks(WAIT_S), "webhook deliveries did not finish"
    task_id: str = answer["data"]["id"]
    return task_id


def expected_signature(arrival: Arrival, secret: str = SECRET) -> str:
    """WaveSpeed's v3 signature worked out from the docs' rule, for the test's own check."""
    headers = arrival.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + arrival.body
    key = secret.removeprefix("whsec_").encode()
    return "v3," + hmac.new(key, signed, hashlib.sha256).hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------ delivery


def test_webhook_posts_signed_prediction_when_task_completes(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a submit naming a webhook URL in the `webhook` query parameter
    sim = make_sim()

    # When the task completes
    task_id = run_task(sim, "a red fox in snow", receiver.url)

    # Then one POST arrives at that path: the bare prediction, as the result endpoint has it
    [arrival] = receiver.received()
    prediction = arrival.json()
    result = wait_terminal(sim, task_id)
    assert arrival.path == "/hooks/wavespeed"
    assert prediction["id"] == task_id and prediction["model"] == MODEL
    assert prediction["status"] == "completed"
    assert prediction["outputs"] == result["outputs"] and len(prediction["outputs"]) == 1
    assert prediction["input"]["prompt"] == "a red fox in snow"
    assert "code" not in prediction or prediction["code"] == 0
    # And it carries WaveSpeed's headers, signed v3 with the secret minus whsec_, fresh
    assert arrival.headers["content-type"] == "application/json"
    assert arrival.headers["webhook-signature"] == expected_signature(arrival)
    assert abs(time.time() - int(arrival.headers["webhook-timestamp"])) < TOLERANCE_S
    # And the record says so
    [record] = sim.webhooks_sent(task_id)
    assert (record.kind, record.outcome, record.attempts) == ("genuine", "acknowledged", 1)
    assert record.webhook_id == arrival.headers["webhook-id"] and record.body == arrival.body
    assert sim.stats()["webhooks_acknowledged"] == 1


def test_pipeline_verifier_accepts_webhook_when_simulator_signs_it(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given the pipeline's own verifier, written apart from the simulator's signer
    sim = make_sim()

    # When the simulator delivers a genuine webhook
    run_task(sim, "cross-check", receiver.url)

    # Then the verifier accepts its exact bytes and headers
    [arrival] = receiver.received()
    verified = verify(arrival.headers, arrival.body, SECRET)
    assert verified.webhook_id == arrival.headers["webhook-id"]
    assert verified.body == arrival.body


def test_webhook_reports_failure_when_task_fails(make_sim: SimFactory, receiver: Receiver) -> None:
    # Given a generation that fails with a WaveSpeed error code
    sim = make_sim()

    # When it ends
    run_task(sim, "doomed [sim:fail-1401]", receiver.url)

    # Then the webhook reports the failure, its error and code, and no outputs
    prediction = receiver.received()[0].json()
    assert prediction["status"] == "failed"
    assert prediction["code"] == 1401 and prediction["error"]
    assert prediction["outputs"] == []


def test_webhook_goes_to_body_field_url_when_query_parameter_absent(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given the `webhook_url` body field one docs page shows, and no query parameter
    sim = make_sim()

    # When submitting
    status, answer = call_json(
        sim, "POST", MODEL_PATH, {"prompt": "field", "webhook_url": receiver.url}
    )
    assert status == 200, answer
    assert sim.wait_for_webhooks(WAIT_S)

    # Then the webhook is delivered there
    assert [a.json()["id"] for a in receiver.received()] == [answer["data"]["id"]]


def test_query_parameter_wins_when_both_forms_given(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given both forms, the body field naming another (dead) endpoint
    sim = make_sim()
    dead = f"http://127.0.0.1:{free_port()}/elsewhere"

    # When submitting
    status, answer = submit_with_webhook(sim, "both", receiver.url, webhook_url=dead)
    assert status == 200, answer
    assert sim.wait_for_webhooks(WAIT_S)

    # Then only the query parameter's endpoint is called
    [record] = sim.webhooks_sent(answer["data"]["id"])
    assert record.url == receiver.url and record.outcome == "acknowledged"


def test_no_webhook_sent_when_submit_names_none(make_sim: SimFactory, receiver: Receiver) -> None:
    # Given a submit without any webhook
    sim = make_sim(webhook_duplicate_rate=1.0)
    status, answer = call_json(sim, "POST", MODEL_PATH, {"prompt": "poll me"})
    assert status == 200

    # When the task ends
    wait_terminal(sim, answer["data"]["id"])

    # Then nothing is scheduled or sent
    assert sim.wait_for_webhooks(WAIT_S)
    assert sim.webhooks_sent() == [] and receiver.received() == []
    assert sim.webhook_faults(answer["data"]["id"]) is None
    assert sim.stats()["webhook_requests"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "javascript:alert(1)",
        "not a url",
        "http://",
        "/relative/path",
        "http://user:pass@127.0.0.1/hook",
        "http://127.0.0.1/hook with space",
        "http://127.0.0.1:99999/hook",
        "https://example.com/" + "a" * MAX_URL_LENGTH,
    ],
)
def test_submit_refused_and_nothing_charged_when_webhook_url_invalid(
    make_sim: SimFactory, url: str
) -> None:
    # Given a submit whose webhook URL a real service would refuse
    sim = make_sim()
    balance = sim.balance_usd()

    # When submitting it
    status, answer = submit_with_webhook(sim, "a fox", url)

    # Then it is a 400 in the error envelope; no task, no charge
    assert status == 400 and answer["code"] == 400 and answer["data"] is None
    assert "webhook" in answer["message"]
    assert sim.stats()["tasks_created"] == 0
    assert sim.balance_usd() == balance


def test_submit_refused_when_webhook_url_field_not_a_string(make_sim: SimFactory) -> None:
    # Given a body field of the wrong type
    sim = make_sim()

    # When submitting
    status, answer = call_json(sim, "POST", MODEL_PATH, {"prompt": "x", "webhook_url": 42})

    # Then it is refused before anything is paid
    assert status == 400 and "webhook_url" in answer["message"]
    assert sim.stats()["tasks_created"] == 0


def test_webhook_body_wrapped_in_envelope_when_configured(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given the envelope body (not what the docs show, offered for robustness tests)
    sim = make_sim(webhook_body="envelope")

    # When a task completes
    task_id = run_task(sim, "wrapped", receiver.url)

    # Then the prediction sits in {code, message, data}, and the signature covers those bytes
    [arrival] = receiver.received()
    document = arrival.json()
    assert (document["code"], document["message"]) == (200, "success")
    assert document["data"]["id"] == task_id and document["data"]["status"] == "completed"
    assert arrival.headers["webhook-signature"] == expected_signature(arrival)


# ------------------------------------------------------------------------------ faults


def test_webhook_never_sent_when_lost(make_sim: SimFactory, receiver: Receiver) -> None:
    # Given a task whose webhook is lost
    sim = make_sim()

    # When it completes
    task_id = run_task(sim, "lost [sim:webhook-lost]", receiver.url)

    # Then nothing arrives, the loss is counted, and polling still finds the video
    assert receiver.received() == []
    assert sim.webhooks_sent(task_id) == []
    faults = sim.webhook_faults(task_id)
    assert faults is not None and faults.names() == ["lost"]
    assert sim.stats()["webhooks_lost"] == 1
    assert wait_terminal(sim, task_id)["status"] == "completed"


def test_webhook_sent_twice_with_same_id_when_duplicated(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a task whose webhook is duplicated
    sim = make_sim()

    # When it completes
    task_id = run_task(sim, "twice [sim:webhook-duplicate]", receiver.url)

    # Then two validly signed POSTs arrive with one webhook-id and the same prediction
    first, second = receiver.received()
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.json() == second.json()
    for arrival in (first, second):
        verify(arrival.headers, arrival.body, SECRET)
    assert [r.kind for r in sim.webhooks_sent(task_id)] == ["genuine", "duplicate"]


def test_webhook_arrives_after_undelayed_one_when_delayed(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given two tasks submitted together, one with its webhook held back 20 service seconds
    sim = make_sim()
    _, late = submit_with_webhook(sim, "late [sim:webhook-delay-20]", receiver.url)
    _, prompt = submit_with_webhook(sim, "prompt", receiver.url)

    # When both deliveries finish
    assert sim.wait_for_webhooks(WAIT_S)

    # Then the prompt task's webhook arrived first, and the late one still arrived, valid
    arrivals = receiver.received()
    assert [a.json()["id"] for a in arrivals] == [prompt["data"]["id"], late["data"]["id"]]
    verify(arrivals[1].headers, arrivals[1].body, SECRET)
    faults = sim.webhook_faults(late["data"]["id"])
    assert faults is not None and faults.names() == ["delayed"]
    assert faults.delay_seconds == pytest.approx(20 * SIM_DEFAULTS["time_scale"])


def test_forged_webhook_arrives_first_and_fails_verification_when_forged(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a task whose receiver is also sent a forgery
    sim = make_sim()

    # When the task fails (so a "completed" claim is certainly false)
    task_id = run_task(sim, "target [sim:fail][sim:webhook-forged]", receiver.url)

    # Then a well-formed but wrongly signed "completed" with the attacker's video comes first
    forged, genuine = receiver.received()
    assert forged.json()["status"] == "completed"
    assert forged.json()["outputs"] == [FORGED_OUTPUT]
    assert forged.headers["webhook-signature"].startswith("v3,")
    assert forged.headers["webhook-signature"] != expected_signature(forged)
    with pytest.raises(WebhookRefused, match="signature"):
        verify(forged.headers, forged.body, SECRET)
    # And the genuine failure follows, valid
    assert verify(genuine.headers, genuine.body, SECRET)
    assert genuine.json()["status"] == "failed"
    assert [r.kind for r in sim.webhooks_sent(task_id)] == ["forged", "genuine"]


def test_replayed_webhook_refused_for_its_age_when_replayed(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a task whose genuine webhook is later replayed
    sim = make_sim()

    # When it completes
    run_task(sim, "echo [sim:webhook-replayed]", receiver.url)

    # Then after the genuine one comes a copy with the same id and an hour-old timestamp
    genuine, replay = receiver.received()
    assert replay.headers["webhook-id"] == genuine.headers["webhook-id"]
    stamp = int(replay.headers["webhook-timestamp"])
    assert int(genuine.headers["webhook-timestamp"]) - stamp >= REPLAY_AGE_SECONDS
    # Its signature is WaveSpeed's own (a captured request), so only its age refuses it
    assert replay.headers["webhook-signature"] == expected_signature(replay)
    assert verify(replay.headers, replay.body, SECRET, clock=lambda: float(stamp))
    with pytest.raises(WebhookRefused, match="timestamp"):
        verify(replay.headers, replay.body, SECRET)


def test_stale_processing_webhook_arrives_after_terminal_one_when_out_of_order(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a task whose webhooks arrive out of order
    sim = make_sim()

    # When it completes
    task_id = run_task(sim, "shuffled [sim:webhook-out-of-order]", receiver.url)

    # Then the terminal webhook is followed by a validly signed, older "processing" one
    terminal, stale = receiver.received()
    assert terminal.json()["status"] == "completed"
    assert stale.json()["status"] == "processing" and stale.json()["outputs"] == []
    assert stale.json()["id"] == task_id
    assert stale.headers["webhook-id"] != terminal.headers["webhook-id"]
    verify(stale.headers, stale.body, SECRET)
    assert [r.kind for r in sim.webhooks_sent(task_id)] == ["genuine", "stale"]


def test_faults_dealt_by_rate_reproducibly_when_seeded(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given two simulators with the same seed and a 50% lost rate
    faults: list[list[bool]] = []
    for _ in range(2):
        sim = make_sim(seed=7, webhook_lost_rate=0.5)
        ids = [submit_with_webhook(sim, f"clip {i}", receiver.url)[1]["data"]["id"]
               for i in range(12)]  # fmt: skip
        assert sim.wait_for_webhooks(WAIT_S)
        dealt = [sim.webhook_faults(task_id) for task_id in ids]
        faults.append([f is not None and f.lost for f in dealt])
        # Then each lost task got nothing and every other one got its webhook
        delivered = {r.task_id for r in sim.webhooks_sent()}
        assert delivered == {t for t, lost in zip(ids, faults[-1], strict=True) if not lost}

    # And the dealing is the seed's: both runs agree, and the rate shows in both directions
    assert faults[0] == faults[1]
    assert 0 < sum(faults[0]) < 12


def test_other_faults_unchanged_when_webhook_rates_set(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given the same seed and failure rate, without and with webhook fault rates
    outcomes: list[list[str]] = []
    for rates in ({}, {"webhook_lost_rate": 0.5, "webhook_duplicate_rate": 0.5}):
        sim = make_sim(seed=3, fail_rate=0.5, **rates)
        ids = [submit_with_webhook(sim, f"clip {i}", receiver.url)[1]["data"]["id"]
               for i in range(10)]  # fmt: skip
        outcomes.append([wait_terminal(sim, task_id)["status"] for task_id in ids])

    # Then the same tasks fail: webhook faults draw from their own stream
    assert outcomes[0] == outcomes[1]
    assert "failed" in outcomes[0] and "completed" in outcomes[0]


# ------------------------------------------------------------------------------ retries


def test_webhook_retried_with_same_id_when_receiver_answers_5xx(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a receiver that fails twice (503, 500) and then accepts
    sim = make_sim()
    receiver.answers = [503, 500]

    # When a task completes
    task_id = run_task(sim, "flaky receiver", receiver.url)

    # Then the same event is sent three times, each attempt freshly signed, and acknowledged
    arrivals = receiver.received()
    assert len(arrivals) == 3
    assert len({a.headers["webhook-id"] for a in arrivals}) == 1
    for arrival in arrivals:
        verify(arrival.headers, arrival.body, SECRET)
    [record] = sim.webhooks_sent(task_id)
    assert (record.attempts, record.response_status, record.outcome) == (3, 200, "acknowledged")
    assert sim.stats()["webhook_requests"] == 3


def test_webhook_not_retried_when_receiver_refuses_it(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    # Given a receiver that answers 401
    sim = make_sim()
    receiver.answers = [401]

    # When a task completes
    task_id = run_task(sim, "refused", receiver.url)

    # Then one attempt is made and recorded as refused
    assert len(receiver.received()) == 1
    [record] = sim.webhooks_sent(task_id)
    assert (record.attempts, record.response_status, record.outcome) == (1, 401, "refused")
    assert sim.stats()["webhooks_refused"] == 1


def test_webhook_abandoned_after_all_attempts_when_receiver_unreachable(
    make_sim: SimFactory,
) -> None:
    # Given nothing listening at the webhook URL and three attempts allowed
    sim = make_sim(webhook_attempts=3, webhook_timeout_seconds=1.0)

    # When a task completes
    task_id = run_task(sim, "nobody home", f"http://127.0.0.1:{free_port()}/hook")

    # Then the delivery gives up after three connection failures, and the task is unharmed
    [record] = sim.webhooks_sent(task_id)
    assert (record.attempts, record.response_status, record.outcome) == (3, None, "abandoned")
    assert sim.stats()["webhooks_abandoned"] == 1
    assert wait_terminal(sim, task_id)["status"] == "completed"


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "overrides",
    [
        {"webhook_lost_rate": 1.5},
        {"webhook_out_of_order_rate": -0.1},
        {"webhook_body": "xml"},
        {"webhook_attempts": 0},
        {"webhook_timeout_seconds": 0},
        {"webhook_delay_seconds": -1},
        {"webhook_secret": "whsec_"},
    ],
)
def test_config_refused_when_webhook_setting_invalid(overrides: dict[str, Any]) -> None:
    # Given / When / Then an impossible webhook setting is refused up front
    with pytest.raises(ValueError, match="webhook"):
        SimulatorConfig(**overrides).validate()


def test_cli_flags_set_webhook_faults_when_given() -> None:
    # Given the simulator's command line with every webhook flag
    args = parse_args(
        [
            "--webhook-lost-rate", "0.1", "--webhook-duplicate-rate", "0.2",
            "--webhook-delay-rate", "0.3", "--webhook-delay-seconds", "12",
            "--webhook-forged-rate", "0.4", "--webhook-replayed-rate", "0.5",
            "--webhook-out-of-order-rate", "0.6", "--webhook-body", "envelope",
            "--webhook-attempts", "2", "--webhook-timeout", "3",
        ]
    )  # fmt: skip

    # When turned into a config
    config = config_from_args(args)

    # Then each lands in its field
    assert (config.webhook_lost_rate, config.webhook_duplicate_rate) == (0.1, 0.2)
    assert (config.webhook_delay_rate, config.webhook_delay_seconds) == (0.3, 12.0)
    assert (config.webhook_forged_rate, config.webhook_replayed_rate) == (0.4, 0.5)
    assert config.webhook_out_of_order_rate == 0.6
    assert (config.webhook_body, config.webhook_attempts) == ("envelope", 2)
    assert config.webhook_timeout_seconds == 3.0


def test_readme_documents_every_webhook_flag_and_marker_when_they_change() -> None:
    # Given the simulator's webhook flags and markers
    flags = [f"--{name.replace('_', '-')}" for name in vars(parse_args([]))]
    flags = [flag for flag in flags if flag.startswith("--webhook")]
    markers = [marker for marker in MARKERS if "webhook" in marker]

    # Then the README names each one
    text = README.read_text(encoding="utf-8")
    missing = [name for name in flags + markers if name not in text]
    assert missing == []
