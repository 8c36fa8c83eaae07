"""Unit tests: the poll schedule and the decision after one reading of a prediction."""

from __future__ import annotations

from typing import Any

import pytest

from kling_pipeline.errors import TransientError
from kling_pipeline.job.workflow import JobSummary, Poll, Schedule, WorkflowState
from kling_pipeline.poll import check_prediction, poll_prediction
from kling_pipeline.settings import PollSchedule
from kling_pipeline.wavespeed import Prediction

Json = dict[str, Any]

NOW = 1_700_000_000.0


def schedule(**overrides: float) -> Schedule:
    base: Json = {
        "first_wait_s": 60,
        "interval_s": 15,
        "backoff": 1.0,
        "max_interval_s": 60,
        "min_interval_s": 5,
        "deadline_at": NOW + 3600,
    }
    base.update(overrides)
    return Schedule.from_dict(base)


def state_for(prediction_id: str, polls: int = 0, **schedule_overrides: float) -> WorkflowState:
    """The execution state as Step Functions hands it to the check, built as submit builds it."""
    return WorkflowState.from_dict(
        {
            "job": {"job_id": "job-1", "input": {"prompt": "p"}, "source": {"type": "sqs"}},
            "prediction": {"id": prediction_id, "submitted_at": NOW - 60},
            "schedule": schedule(**schedule_overrides).to_dict(),
            "poll": {"status": "waiting", "wait_seconds": 60, "polls": polls},
        }
    )


def reading(status: str, **fields: Any) -> Prediction:
    """What `read_prediction` returns for a prediction in `status`."""
    return Prediction(id="p-1", status=status, **fields)


def check(state: WorkflowState, prediction: Prediction, now: float = NOW) -> Json:
    """The decision as the state machine sees it: the new `$.poll` object."""
    return check_prediction(state, prediction, now).to_dict()


# ------------------------------------------------------------------------------ schedule math


def test_wait_constant_when_backoff_is_one() -> None:
    # Given a 15 s interval without backoff
    plan = schedule(interval_s=15, backoff=1.0)

    # When asking for the waits after polls 0..9 / Then every wait is the interval
    assert [plan.next_wait(polls) for polls in range(10)] == [15] * 10


def test_wait_grows_then_caps_when_backoff_set() -> None:
    # Given a 10 s interval doubling per poll, capped at 60 s
    plan = schedule(interval_s=10, backoff=2.0, max_interval_s=60)

    # When asking for successive waits
    waits = [plan.next_wait(polls) for polls in range(1, 8)]

    # Then it doubles from the interval and stays at the cap
    assert waits == [10, 20, 40, 60, 60, 60, 60]


def test_wait_rounded_to_whole_seconds_when_backoff_fractional() -> None:
    # Given a 15 s interval growing by half per poll, capped at 40 s
    plan = schedule(interval_s=15, backoff=1.5, max_interval_s=40)

    # When / Then 15, 22.5, 33.75, 50.6 (capped) come out as whole seconds
    assert [plan.next_wait(polls) for polls in range(1, 5)] == [15, 22, 34, 40]


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
    assert schedule(**overrides).next_wait(3) == expected


def test_wait_uses_contract_defaults_when_schedule_empty() -> None:
    # Given / When an empty schedule / Then 15 s, no backoff, 5 s floor apply
    assert [Schedule.from_dict({}).next_wait(polls) for polls in (1, 5)] == [15, 15]


# ------------------------------------------------------------------------------ decisions


def test_check_reports_waiting_with_schedule_wait_when_still_generating() -> None:
    # Given a task polled twice already, on a doubling schedule, generating
    state = state_for("p-1", polls=2, interval_s=10, backoff=2.0, max_interval_s=300)
    state = state.with_poll(Poll(polls=2, processing_since=NOW - 30))

    # When checking it
    poll = check(state, reading("processing"))

    # Then the workflow is told to wait the scheduled 40 s (third poll), counting this poll
    assert poll == {
        "polls": 3,
        "last_status": "processing",
        "checked_at": NOW,
        "processing_since": NOW - 30,
        "status": "waiting",
        "wait_seconds": 40,
    }


def test_check_reports_processing_when_task_started() -> None:
    # Given a task past its "created" phase but not done
    # When checking it / Then it is still waiting, with the API's status recorded
    poll = check(state_for("p-1"), reading("processing"))
    assert (poll["status"], poll["last_status"], poll["wait_seconds"]) == (
        "waiting",
        "processing",
        15,
    )


def test_check_reports_completed_with_outputs_when_generation_done() -> None:
    # Given a finished task with two outputs, flagged NSFW by the API
    outputs = ["https://cdn.example/1.mp4", "https://cdn.example/2.mp4"]
    done = reading("completed", outputs=outputs, has_nsfw_contents=[True, True])

    # When checking it
    poll = check(state_for("p-1", polls=4), done)

    # Then the outputs and flags the API reports are handed on
    assert poll["status"] == "completed" and poll["polls"] == 5
    assert poll["outputs"] == outputs
    assert poll["has_nsfw_contents"] == [True, True]
    assert poll["execution_time_ms"] == 0.0


def test_check_reports_completed_when_done_after_deadline() -> None:
    # Given a finished task checked after the poll deadline
    state = state_for("p-1", deadline_at=NOW - 10)

    # When checking it / Then the video is still delivered: the deadline only stops waiting
    poll = check(state, reading("completed", outputs=["https://cdn.example/1.mp4"]))
    assert poll["status"] == "completed"
    assert poll["outputs"] == ["https://cdn.example/1.mp4"]


@pytest.mark.parametrize(
    ("status", "message", "code", "words"),
    [
        ("failed", "Simulated generation failure", "generation_failed", "generation failure"),
        ("cancelled", "", "generation_cancelled", "cancelled"),
        ("timeout", "", "generation_timeout", "timeout"),
    ],
)
def test_check_reports_failed_when_generation_ends_badly(
    status: str, message: str, code: str, words: str
) -> None:
    # Given a task the API ends as failed, cancelled or timed out
    # When checking it
    poll = check(state_for("p-1"), reading(status, error=message))

    # Then the workflow fails with a code naming the API status and the API's own message
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == code
    assert words in poll["error"]["message"]
    assert "outputs" not in poll and "wait_seconds" not in poll


def test_check_reports_unknown_status_when_api_invents_one() -> None:
    # Given an API answering a status the pipeline does not know
    # When checking / Then the job fails rather than polling forever
    poll = check(state_for("p-1"), reading("paused"))
    assert poll["status"] == "failed"
    assert poll["last_status"] == "paused"
    assert poll["error"]["code"] == "unknown_status"
    assert "'paused'" in poll["error"]["message"]


def test_check_reports_no_outputs_when_completed_without_any() -> None:
    # Given an API claiming completion without any output URL
    # When checking / Then the job fails as data with its own code (nothing to retry)
    poll = check(state_for("p-2"), reading("completed", outputs=[]))
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == "no_outputs"


def test_check_reports_deadline_passed_when_still_generating_at_deadline() -> None:
    # Given a task still running when the deadline has just arrived
    state = state_for("p-7", polls=7, deadline_at=NOW)

    # When checking it
    poll = check(state, reading("processing"))

    # Then the job fails with deadline_passed, naming the prediction left on WaveSpeed
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == "deadline_passed"
    assert "p-7" in poll["error"]["message"]
    assert poll["polls"] == 8 and poll["last_status"] == "processing"


@pytest.mark.parametrize("remaining", [0.2, 0.99, 1.0, 3.5, 4.99, 14.0, 59.5, 3599.0])
def test_wait_lands_within_a_second_of_deadline_when_deadline_near(remaining: float) -> None:
    # Given a running task with `remaining` seconds to its deadline and a 5 s floor
    state = state_for("p-1", interval_s=60, min_interval_s=5, deadline_at=NOW + remaining)

    # When checking it
    poll = check(state, reading("processing"))

    # Then the next poll is scheduled no later than a second past the deadline
    assert poll["status"] == "waiting"
    assert poll["wait_seconds"] >= 1
    assert NOW + poll["wait_seconds"] <= NOW + remaining + 1
    assert poll["wait_seconds"] == min(60, int(remaining) + 1)


def test_poll_loop_ends_on_deadline_when_generation_never_finishes() -> None:
    # Given a never-ending task, a 73 s deadline and a 15 s x1.5 schedule (floor 5 s): polls
    # at 0, 15, 37 and 71 s leave 2 s, less than the floor
    state = state_for("p-1", interval_s=15, backoff=1.5, deadline_at=NOW + 73)
    clock = NOW

    # When running the workflow's loop: check, then wait what it says, until not waiting
    poll = Poll()
    poll_times: list[float] = []
    for _ in range(50):
        poll = check_prediction(state, reading("processing"), clock)
        poll_times.append(clock)
        if poll.status != "waiting":
            break
        state = state.with_poll(poll)
        clock += poll.wait_seconds or 0

    # Then it ends with deadline_passed on the first poll at or after the deadline,
    # never polling later than a second past it
    assert poll.status == "failed" and poll.error is not None
    assert poll.error.code == "deadline_passed"
    assert NOW + 73 <= poll_times[-1] <= NOW + 74
    assert all(t < NOW + 73 for t in poll_times[:-1])
    assert [b - a for a, b in zip(poll_times, poll_times[1:], strict=False)][:3] == [15, 22, 34]
    assert poll.polls == len(poll_times)


# ------------------------------------------------------------------- queueing and outages


def realistic_state(polls: int = 0, **poll_fields: Any) -> WorkflowState:
    """A state as submit starts it today: 1 h of generation, 6 h in the queue at most."""
    plan = PollSchedule(interval_s=15, deadline_s=3600, queued_deadline_s=6 * 3600)
    start = WorkflowState.start(
        JobSummary(job_id="job-q", input={"prompt": "p"}, source={"type": "sqs"}),
        "p-q",
        plan,
        NOW,
    )
    return start.with_poll(Poll(polls=polls, **poll_fields))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class ScriptedReads:
    """A status reader answering from a script: a Prediction, or an error to raise."""

    def __init__(self, *answers: Prediction | TransientError) -> None:
        self.answers = list(answers)
        self.reads = 0

    def read_prediction(self, prediction_id: str) -> Prediction:
        self.reads += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, TransientError):
            raise answer
        return answer


def test_check_waits_the_queued_interval_when_task_still_queued() -> None:
    # Given a fast schedule (5 s reads) and a task still queued at WaveSpeed
    plan = PollSchedule(interval_s=5, max_interval_s=5, queued_interval_s=120)
    start = WorkflowState.start(
        JobSummary(job_id="job-q", input={"prompt": "p"}, source={"type": "sqs"}), "p-q", plan, NOW
    )

    # When it is read while queued, and again once it is processing
    queued = check_prediction(start, reading("created"), NOW + 60)
    started = check_prediction(start.with_poll(queued), reading("processing"), NOW + 180)

    # Then queued reads are 120 s apart (history events stay bounded over a long queue), and
    # the generation is read on the fast schedule again
    assert (queued.wait_seconds, started.wait_seconds) == (120, 5)


def test_check_keeps_waiting_when_task_queued_past_generation_deadline() -> None:
    # Given a task still "created" (queued at WaveSpeed) 2 hours after the submit
    state = realistic_state(polls=100)

    # When checking it
    poll = check(state, reading("created"), now=NOW + 2 * 3600)

    # Then it keeps waiting: the 1 h generation deadline has not started counting
    assert poll["status"] == "waiting"
    assert "processing_since" not in poll


def test_check_fails_when_queued_longer_than_queue_deadline() -> None:
    # Given a task still queued when its 6 h queue bound arrives
    # When checking it
    poll = check(realistic_state(), reading("created"), now=NOW + 6 * 3600)

    # Then the job fails with deadline_passed, saying it never left the queue
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == "deadline_passed"
    assert "queue" in poll["error"]["message"]


def test_check_counts_generation_deadline_from_first_processing_read() -> None:
    # Given a task that queued 3 hours, then was first seen processing
    started = NOW + 3 * 3600
    first = check_prediction(realistic_state(), reading("processing"), started)

    # When it is still processing 59 minutes later, then 60 minutes later
    later = realistic_state(polls=first.polls, processing_since=first.processing_since)
    before = check(later, reading("processing"), now=started + 3540)
    after = check(later, reading("processing"), now=started + 3600)

    # Then the deadline counts from the processing start, not from the submit
    assert first.processing_since == started
    assert before["status"] == "waiting" and before["processing_since"] == started
    assert after["status"] == "failed" and after["error"]["code"] == "deadline_passed"


def test_poll_waits_with_backoff_when_status_reads_keep_failing() -> None:
    # Given an API in an outage: every status read fails after the client's retries
    api = ScriptedReads(TransientError("status: HTTP 503", code="http_503"))
    state = realistic_state(polls=3, processing_since=NOW - 60)

    # When polling three times in a row, waiting what each poll says
    waits = []
    clock = Clock()
    for _ in range(3):
        poll = poll_prediction(state, api, clock=clock)
        waits.append(poll.wait_seconds)
        state = state.with_poll(poll)
        clock.now += poll.wait_seconds or 0

    # Then the job is never failed, the waits back off, and the processing start is kept
    assert state.poll.status == "waiting" and state.poll.read_failures == 3
    assert waits == [15, 30, 60]
    assert state.poll.processing_since == NOW - 60


def test_poll_completes_when_outage_ends_before_deadline() -> None:
    # Given a 40 s outage on status reads, then the finished video
    done = reading("completed", outputs=["https://cdn.example/1.mp4"])
    api = ScriptedReads(*[TransientError("status: HTTP 503", code="http_503")] * 3, done)
    state = realistic_state(processing_since=NOW)
    clock = Clock()

    # When the workflow loop runs
    while state.poll.status == "waiting":
        state = state.with_poll(poll_prediction(state, api, clock=clock))
        clock.now += state.poll.wait_seconds or 0

    # Then the job completes, and the read failures are forgotten once a read succeeds
    assert state.poll.status == "completed"
    assert state.poll.read_failures == 0 and api.reads == 4


def test_poll_fails_status_unreadable_when_outage_outlasts_deadline() -> None:
    # Given an outage still going when the generation deadline arrives
    api = ScriptedReads(TransientError("status: API code 5003", code="api_5003"))
    state = realistic_state(polls=9, processing_since=NOW - 3600, read_failures=8)

    # When polling at the deadline
    poll = poll_prediction(state, api, clock=lambda: NOW)

    # Then the failed read was the last one: the job fails, naming the cause and the task
    assert poll.status == "failed" and poll.error is not None
    assert poll.error.code == "status_unreadable"
    assert "api_5003" in poll.error.message and "p-q" in poll.error.message


def test_check_completes_when_task_finished_at_deadline() -> None:
    # Given a task that finished just as its generation deadline arrived
    state = realistic_state(processing_since=NOW - 3600)

    # When the read made at the deadline says completed
    poll = check(state, reading("completed", outputs=["https://cdn.example/1.mp4"]))

    # Then the video is delivered: the deadline is only decided on that read
    assert poll["status"] == "completed"


# ------------------------------------------------------------------ WaveSpeed's error codes


@pytest.mark.parametrize(
    ("status", "code", "expected", "refunded"),
    [
        ("failed", 1200, "content_moderated", True),
        ("failed", 1400, "invalid_parameters", True),
        ("failed", 1401, "invalid_parameters", True),
        ("failed", 1402, "media_unreachable", True),
        ("failed", 1403, "generation_failed", True),
        ("failed", 1405, "generation_failed", True),
        ("failed", 5000, "wavespeed_server_error", True),
        ("failed", 5003, "wavespeed_server_error", True),
        ("timeout", 5004, "generation_timeout", True),
        ("failed", 0, "generation_failed", True),
        ("timeout", 0, "generation_timeout", True),
        ("cancelled", 1405, "generation_cancelled", False),
        ("failed", 4242, "generation_failed", True),
    ],
)
def test_check_maps_task_error_code_when_generation_fails(
    status: str, code: int, expected: str, refunded: bool
) -> None:
    # Given a task WaveSpeed ended with a data.code and its text
    failed = reading(status, code=code, error="The content contains sensitive information.")

    # When checking it
    poll = check(state_for("p-1"), failed)

    # Then the job's error code says what kind of failure it was, with WaveSpeed's words, and
    # a failure WaveSpeed refunds is marked refunded
    assert poll["status"] == "failed"
    assert poll["error"]["code"] == expected
    assert "sensitive information" in poll["error"]["message"]
    assert poll.get("refunded", False) is refunded


def test_check_fails_at_once_when_restore_finds_task_not_completed() -> None:
    # Given a re-store run of a job whose task is somehow still processing
    base = state_for("p-1")
    state = WorkflowState.from_dict(
        {**base.to_dict(), "job": {**base.job.to_dict(), "restore": True}}
    )

    # When checking it / Then it does not wait for a generation: nothing to restore
    poll = check(state, reading("processing"))
    assert poll["status"] == "failed" and poll["error"]["code"] == "not_restorable"
