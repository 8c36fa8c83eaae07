"""Unit tests: the poll schedule and one status check against the WaveSpeed simulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kling_local.simulator import WaveSpeedSimulator
from kling_pipeline.errors import PermanentError
from kling_pipeline.polling import check_prediction, next_wait
from kling_pipeline.wavespeed import RetryPolicy, WaveSpeedClient
from tests.conftest import ServerStarter, SimFactory

Json = dict[str, Any]

NOW = 1_700_000_000.0
KEY = "sim-test-key"


#: Simulator settings of this module's `make_sim` / `sim` fixtures (tests/conftest.py).
SIM_DEFAULTS: dict[str, Any] = {"generation_seconds": 0.0, "processing_after_seconds": 0.0}


def client_for(base_url: str) -> WaveSpeedClient:
    return WaveSpeedClient(
        base_url,
        lambda: KEY,
        timeout_s=5.0,
        retry=RetryPolicy(attempts=3, base_s=0.0, cap_s=0.0),
        sleep=lambda seconds: None,
    )


def schedule(**overrides: float) -> Json:
    base: Json = {
        "first_wait_s": 60,
        "interval_s": 15,
        "backoff": 1.0,
        "max_interval_s": 60,
        "min_interval_s": 5,
        "deadline_at": NOW + 3600,
    }
    base.update(overrides)
    return base


def state_for(prediction_id: str, polls: int = 0, **schedule_overrides: float) -> Json:
    """The execution state as Step Functions hands it to the check (see submission.py)."""
    return {
        "prediction": {"id": prediction_id},
        "schedule": schedule(**schedule_overrides),
        "poll": {"status": "waiting", "wait_seconds": 60, "polls": polls},
    }


def submitted(sim: WaveSpeedSimulator, prompt: str) -> tuple[WaveSpeedClient, str]:
    api = client_for(sim.base_url)
    return api, api.submit_generation({"prompt": prompt})


class _CannedHandler(BaseHTTPRequestHandler):
    """Answers every GET with the envelope the server was given."""

    server: _CannedServer

    def do_GET(self) -> None:
        body = json.dumps({"code": 200, "message": "success", "data": self.server.data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CannedServer(ThreadingHTTPServer):
    data: Json


@pytest.fixture
def canned_api(http_servers: ServerStarter) -> Callable[[Json], str]:
    """A WaveSpeed stand-in for answers the simulator never gives (odd statuses, no outputs)."""

    def start(data: Json) -> str:
        server = _CannedServer(("127.0.0.1", 0), _CannedHandler)
        server.data = data
        return f"http://{http_servers(server)}"

    return start


# ------------------------------------------------------------------------------ schedule math


def test_wait_constant_when_backoff_is_one() -> None:
    # Given a 15 s interval without backoff
    plan = schedule(interval_s=15, backoff=1.0)

    # When asking for the waits after polls 0..9 / Then every wait is the interval
    assert [next_wait(plan, polls) for polls in range(10)] == [15] * 10


def test_wait_grows_then_caps_when_backoff_set() -> None:
    # Given a 10 s interval doubling per poll, capped at 60 s
    plan = schedule(interval_s=10, backoff=2.0, max_interval_s=60)

    # When asking for successive waits
    waits = [next_wait(plan, polls) for polls in range(1, 8)]

    # Then it doubles from the interval and stays at the cap
    assert waits == [10, 20, 40, 60, 60, 60, 60]


def test_wait_rounded_to_whole_seconds_when_backoff_fractional() -> None:
    # Given a 15 s interval growing by half per poll, capped at 40 s
    plan = schedule(interval_s=15, backoff=1.5, max_interval_s=40)

    # When / Then 15, 22.5, 33.75, 50.6 (capped) come out as whole seconds
    assert [next_wait(plan, polls) for polls in range(1, 5)] == [15, 22, 34, 40]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"interval_s": 1, "min_interval_s": 5}, 5),
        ({"interval_s": 0, "min_interval_s": 5}, 5),
        ({"interval_s": 30, "max_interval_s": 2, "min_interval_s": 5}, 5),
        ({"interval_s": 0, "min_interval_s": 0}, 0),
    ],
)
def test_wait_never_below_floor_when_interval_or_cap_smaller(
    overrides: dict[str, float], expected: int
) -> None:
    # Given / When a schedule whose interval or cap is under the floor
    # Then the floor wins
    assert next_wait(schedule(**overrides), 3) == expected


def test_wait_uses_contract_defaults_when_schedule_empty() -> None:
    # Given / When an empty schedule / Then 15 s, no backoff, 5 s floor apply
    assert [next_wait({}, polls) for polls in (1, 5)] == [15, 15]


# ------------------------------------------------------------------------------ status checks


def test_check_reports_waiting_with_schedule_wait_when_still_generating(
    make_sim: SimFactory,
) -> None:
    # Given a task that takes an hour, polled twice already, on a doubling schedule
    sim = make_sim(generation_seconds=3600, processing_after_seconds=3600)
    api, prediction_id = submitted(sim, "a slow sunrise")
    state = state_for(prediction_id, polls=2, interval_s=10, backoff=2.0, max_interval_s=300)

    # When checking it
    poll = check_prediction(state, api, clock=lambda: NOW)

    # Then the workflow is told to wait the scheduled 40 s (third poll), counting this poll
    assert poll == {
        "polls": 3,
        "last_status": "created",
        "checked_at": NOW,
        "status": "waiting",
        "wait_seconds": 40,
    }
    assert sim.stats()["result_requests"] == 1


def test_check_reports_processing_when_task_started(make_sim: SimFactory) -> None:
    # Given a task past its "created" phase but not done
    sim = make_sim(generation_seconds=3600, processing_after_seconds=0.0)
    api, prediction_id = submitted(sim, "a river")

    # When checking it / Then it is still waiting, with the API's status recorded
    poll = check_prediction(state_for(prediction_id), api, clock=lambda: NOW)
    assert (poll["status"], poll["last_status"], poll["wait_seconds"]) == (
        "waiting",
        "processing",
        15,
    )


def test_check_reports_completed_with_outputs_when_generation_done(make_sim: SimFactory) -> None:
    # Given a finished task with two outputs, flagged NSFW by the API
    sim = make_sim()
    api, prediction_id = submitted(sim, "twins [sim:two-outputs] [sim:nsfw]")

    # When checking it
    poll = check_prediction(state_for(prediction_id, polls=4), api, clock=lambda: NOW)

    # Then the outputs and flags the simulator reports are handed on
    (task,) = sim.tasks()
    assert poll["status"] == "completed" and poll["polls"] == 5
    assert poll["outputs"] == task["outputs"] and len(poll["outputs"]) == 2
    assert poll["has_nsfw_contents"] == [True, True]
    assert poll["execution_time_ms"] == 0.0  # generation_seconds=0 in this simulator


def test_check_reports_completed_when_done_after_deadline(make_sim: SimFactory) -> None:
    # Given a finished task checked after the poll deadline
    sim = make_sim()
    api, prediction_id = submitted(sim, "late but fine")
    state = state_for(prediction_id, deadline_at=NOW - 10)

    # When checking it / Then the video is still delivered: the deadline only stops waiting
    poll = check_prediction(state, api, clock=lambda: NOW)
    assert poll["status"] == "completed"
    assert poll["outputs"] == sim.tasks()[0]["outputs"]


@pytest.mark.parametrize(
    ("marker", "code", "words"),
    [
        ("[sim:fail]", "generation_failed", "Simulated generation failure"),
        ("[sim:cancel]", "generation_cancelled", "cancelled"),
        ("[sim:timeout]", "generation_timeout", "timed out"),
    ],
)
def test_check_reports_failed_when_generation_ends_badly(
    make_sim: SimFactory, marker: str, code: str, words: str
) -> None:
    # Given a task the API ends as failed, cancelled or timed out
    sim = make_sim()
    api, prediction_id = submitted(sim, f"doomed {marker}")

    # When checking it
    poll = check_prediction(state_for(prediction_id), api, clock=lambda: NOW)

    # Then the workflow fails with a code naming the API status and the API's own message
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == code
    assert words in poll["error"]["message"]
    assert "outputs" not in poll and "wait_seconds" not in poll


def test_check_reports_unknown_status_when_api_invents_one(
    canned_api: Callable[[Json], str],
) -> None:
    # Given an API answering a status the pipeline does not know
    base = canned_api({"id": "p-1", "status": "Paused", "outputs": []})

    # When checking / Then the job fails rather than polling forever
    poll = check_prediction(state_for("p-1"), client_for(base), clock=lambda: NOW)
    assert poll["status"] == "failed"
    assert poll["last_status"] == "paused"
    assert poll["error"]["code"] == "unknown_status"
    assert "'paused'" in poll["error"]["message"]


def test_check_refuses_completed_when_no_outputs(canned_api: Callable[[Json], str]) -> None:
    # Given an API claiming completion without any output URL
    base = canned_api({"id": "p-2", "status": "completed", "outputs": []})

    # When checking / Then a permanent error says so
    with pytest.raises(PermanentError) as caught:
        check_prediction(state_for("p-2"), client_for(base), clock=lambda: NOW)
    assert caught.value.code == "no_outputs"


def test_check_reports_deadline_passed_when_still_generating_at_deadline(
    make_sim: SimFactory,
) -> None:
    # Given a task still running when the deadline has just arrived
    sim = make_sim(generation_seconds=3600, processing_after_seconds=0.0)
    api, prediction_id = submitted(sim, "endless")
    state = state_for(prediction_id, polls=7, deadline_at=NOW)

    # When checking it
    poll = check_prediction(state, api, clock=lambda: NOW)

    # Then the job fails with deadline_passed, naming the prediction left on WaveSpeed
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == "deadline_passed"
    assert prediction_id in poll["error"]["message"]
    assert poll["polls"] == 8 and poll["last_status"] == "processing"


@pytest.mark.parametrize("remaining", [0.2, 0.99, 1.0, 3.5, 4.99, 14.0, 59.5, 3599.0])
def test_wait_lands_within_a_second_of_deadline_when_deadline_near(
    make_sim: SimFactory, remaining: float
) -> None:
    # Given a running task with `remaining` seconds to its deadline and a 5 s floor
    sim = make_sim(generation_seconds=3600)
    api, prediction_id = submitted(sim, "close call")
    state = state_for(prediction_id, interval_s=60, min_interval_s=5, deadline_at=NOW + remaining)

    # When checking it
    poll = check_prediction(state, api, clock=lambda: NOW)

    # Then the next poll is scheduled no later than a second past the deadline
    assert poll["status"] == "waiting"
    assert poll["wait_seconds"] >= 1
    assert NOW + poll["wait_seconds"] <= NOW + remaining + 1
    assert poll["wait_seconds"] == min(60, int(remaining) + 1)


def test_poll_loop_ends_on_deadline_when_generation_never_finishes(
    make_sim: SimFactory,
) -> None:
    # Given a never-ending task, a 73 s deadline and a 15 s x1.5 schedule (floor 5 s): polls
    # at 0, 15, 37 and 71 s leave 2 s, less than the floor
    sim = make_sim(generation_seconds=3600)
    api, prediction_id = submitted(sim, "forever")
    state = state_for(prediction_id, interval_s=15, backoff=1.5, deadline_at=NOW + 73)
    clock = [NOW]

    # When running the workflow's loop: check, then wait what it says, until not waiting
    poll: Json = {}
    poll_times: list[float] = []
    for _ in range(50):
        poll = check_prediction(state, api, clock=lambda: clock[0])
        poll_times.append(clock[0])
        if poll["status"] != "waiting":
            break
        state = {**state, "poll": poll}
        clock[0] += poll["wait_seconds"]

    # Then it ends with deadline_passed on the first poll at or after the deadline,
    # never polling later than a second past it, and each poll was a real status read
    assert poll["status"] == "failed" and poll["error"]["code"] == "deadline_passed"
    assert NOW + 73 <= poll_times[-1] <= NOW + 74
    assert all(t < NOW + 73 for t in poll_times[:-1])
    assert [b - a for a, b in zip(poll_times, poll_times[1:], strict=False)][:3] == [15, 22, 34]
    assert poll["polls"] == len(poll_times) == sim.stats()["result_requests"]
