"""Unit tests: the shared start-rate budget and re-queueing for pacing, against fakes."""

from __future__ import annotations

import heapq
import json
import random

import pytest

from kling_pipeline.settings import Settings
from kling_pipeline.submit.admission import Admission
from kling_pipeline.submit.intake import ReceivedMessage
from kling_pipeline.submit.pacing import MAX_DELAY_S, PacingWait, StartPacer, StartRate
from kling_pipeline.submit.refusal import Refuser
from kling_pipeline.submit.service import SubmitService
from kling_pipeline.wavespeed import ThrottledSubmit
from tests.unit.fakes import (
    FakeApi,
    FakeLedger,
    FakeNotifier,
    FakePromptFiles,
    FakeQueue,
    FakeWorkflows,
    fake_signer,
)
from tests.unit.pacing_fakes import FakeClock, FakeResend, FakeSchedule

RATE = StartRate(videos_per_minute=10, window_s=60.0, margin_s=2.0, max_wait_s=3.0)


def most_in_any_window(starts: list[float], window_s: float) -> int:
    """The most starts any half-open window of `window_s` holds (as a sliding count sees)."""
    ordered = sorted(starts)
    return max(sum(1 for t in ordered if first <= t < first + window_s) for first in ordered)


def drive(jobs: int, rate: StartRate, clock: FakeClock, pacer: StartPacer) -> list[float]:
    """Every job arrives at once; a PacingWait brings it back after its delay, as SQS would."""
    due = [(clock.now, i) for i in range(jobs)]
    heapq.heapify(due)
    starts: list[float] = []
    while due:
        at, i = heapq.heappop(due)
        clock.now = max(clock.now, at)
        try:
            pacer.wait_turn(f"job-{i}")
        except PacingWait as wait:
            heapq.heappush(due, (clock.now + wait.delay_s, i))
            continue
        starts.append(clock.now)
    return starts


def test_starts_never_pass_the_cap_in_any_window_when_three_minutes_of_jobs_arrive_at_once() -> (
    None
):
    # Given a 10-per-minute account and 30 jobs arriving together
    clock = FakeClock()
    pacer = StartPacer(RATE, FakeSchedule(), clock=clock, sleep=clock.sleep)

    # When each job takes its turn, coming back whenever told to wait
    starts = drive(30, RATE, clock, pacer)

    # Then all start, no 60 s window ever holds more than 10, and the rate is near the cap
    assert len(starts) == 30
    assert most_in_any_window(starts, 60.0) <= 10
    per_minute = (len(starts) - 1) / (max(starts) - min(starts)) * 60
    assert per_minute >= 0.9 * 10


def test_a_far_turn_is_kept_for_the_job_when_it_must_come_back_later() -> None:
    # Given a schedule whose next free start is a minute away
    clock = FakeClock()
    schedule = FakeSchedule()
    pacer = StartPacer(RATE, schedule, clock=clock, sleep=clock.sleep)
    schedule.next_us = int((clock.now + 60) * 1_000_000)

    # When a job asks for its turn
    with pytest.raises(PacingWait) as wait:
        pacer.wait_turn("late-1")

    # Then its turn is reserved and it is told to come back just before it
    assert schedule.kept["late-1"] == schedule.next_us - RATE.spacing_us
    assert wait.value.delay_s == 60 - 3

    # And when it comes back in time it starts at its own turn, without taking another
    clock.now += wait.value.delay_s
    turn = pacer.wait_turn("late-1")
    assert turn is not None and turn.at_us == int(clock.now * 1_000_000)
    assert "late-1" not in schedule.kept


def test_a_missed_turn_is_replaced_by_a_new_one_when_the_job_comes_back_too_late() -> None:
    # Given a job whose kept turn passed 5 s ago (more than the 1 s grace)
    clock = FakeClock()
    schedule = FakeSchedule()
    pacer = StartPacer(RATE, schedule, clock=clock, sleep=clock.sleep)
    schedule.kept["slow-1"] = int((clock.now - 5) * 1_000_000)
    schedule.next_us = int((clock.now + 1) * 1_000_000)

    # When it asks again
    turn = pacer.wait_turn("slow-1")

    # Then it gets the next free turn, not the missed one
    assert turn is not None and turn.at_us == int((1_000_000.0 + 1) * 1_000_000)
    assert clock.slept == [pytest.approx(1.0)]


def test_a_full_schedule_sends_the_job_away_without_reserving_when_past_fifteen_minutes() -> None:
    # Given 20 minutes of starts already promised
    clock = FakeClock()
    schedule = FakeSchedule()
    pacer = StartPacer(RATE, schedule, clock=clock, sleep=clock.sleep)
    schedule.next_us = int((clock.now + 1200) * 1_000_000)

    # When a job asks / Then it waits, nothing is reserved, and it comes back within SQS's max
    with pytest.raises(PacingWait) as wait:
        pacer.wait_turn("backlog-1")
    assert schedule.next_us == int((clock.now + 1200) * 1_000_000)
    assert schedule.kept == {}
    assert 1 <= wait.value.delay_s <= MAX_DELAY_S


class Submit:
    """The submit service with a paced admission, wired to fakes."""

    def __init__(self, settings: Settings, *, rate: StartRate = RATE) -> None:
        self.settings = settings
        self.ledger = FakeLedger()
        self.api = FakeApi()
        self.queue = FakeQueue()
        self.resend = FakeResend()
        self.clock = FakeClock()
        self.schedule = FakeSchedule()
        self.notifier = FakeNotifier(self.ledger)
        pacer = StartPacer(rate, self.schedule, clock=self.clock, sleep=self.clock.sleep)
        admission = Admission(
            settings,
            ledger=self.ledger,
            api=self.api,
            workflows=FakeWorkflows(),
            pacer=pacer,
            clock=self.clock,
        )
        self.service = SubmitService(
            settings,
            admission=admission,
            refuser=Refuser(
                ledger=self.ledger, notifier=self.notifier, queue=self.queue, signer=fake_signer()
            ),
            ledger=self.ledger,
            queue=self.queue,
            prompt_files=FakePromptFiles(),
            signer=fake_signer(),
            resend=self.resend,
            rng=random.Random(7),
        )

    def deliver(self, job_id: str, *, receive_count: int = 1) -> str:
        body = json.dumps({"prompt": "a lantern on a pier", "job_id": job_id})
        attributes = {"kp-source": {"DataType": "String", "StringValue": '{"type": "s3"}'}}
        message = ReceivedMessage(
            message_id=f"m-{job_id}-{receive_count}",
            body=body,
            receipt_handle=f"rh-{job_id}",
            receive_count=receive_count,
        )
        self.service.handle_message(message, attributes=attributes)
        return body


def test_a_job_waits_for_its_turn_without_spending_a_receive_when_the_rate_is_used_up() -> None:
    # Given a 2-per-minute account whose first start was just taken
    s = Submit(Settings(daily_budget_usd=10.0), rate=StartRate(videos_per_minute=2))
    s.deliver("first-1")

    # When a second job arrives
    body = s.deliver("second-1")

    # Then it is sent back unchanged (body and attributes) with a delay, and nothing else
    # happens: no POST, no claim or spend held, no notification, no DLQ, no visibility change
    [(sent_body, attributes, delay)] = s.resend.sent
    assert sent_body == body
    assert attributes == {"kp-source": {"DataType": "String", "StringValue": '{"type": "s3"}'}}
    assert 25 <= delay <= 31
    assert len(s.api.posts) == 1
    assert s.ledger.get("second-1") is None
    assert sum(s.ledger.spent.values()) == pytest.approx(1.3)
    assert s.notifier.published == [] and s.queue.parked == [] and s.queue.delays == []


def test_a_429_from_another_client_is_re_queued_when_the_message_is_on_its_last_receive() -> None:
    # Given an account another client has rate-limited, and a message on its last receive
    s = Submit(Settings(max_receive_count=3))
    s.api.fail_with = ThrottledSubmit("429", code="rate_limited")

    # When it is delivered
    s.deliver("crowded-1", receive_count=3)

    # Then it is not given up: re-sent within the next rate window, no notification, no DLQ
    [(_, _, delay)] = s.resend.sent
    assert 1 <= delay <= 60
    assert s.notifier.published == [] and s.queue.parked == []
    assert s.ledger.get("crowded-1") is None


def test_the_slot_serves_the_next_job_when_the_post_was_provably_refused() -> None:
    # Given a 429 on the first POST
    s = Submit(Settings())
    s.api.fail_with = ThrottledSubmit("429", code="rate_limited")
    s.deliver("refused-1")
    taken_before = s.schedule.next_us

    # When the API accepts again and the next job arrives at the same moment
    s.api.fail_with = None
    s.deliver("next-1")

    # Then the refused job's slot was given back, and the next job started in it at once
    assert taken_before == int(s.clock.now * 1_000_000)
    assert len(s.api.posts) == 1
    assert s.schedule.next_us == taken_before + RATE.spacing_us
    assert s.clock.slept == []


def test_a_transient_failure_still_counts_toward_the_dlq_when_it_is_not_pacing() -> None:
    # Given an unreachable API on the message's last receive
    s = Submit(Settings(max_receive_count=2))
    s.api.fail_with = ThrottledSubmit("unreachable", code="api_unreachable")

    # When it is delivered
    s.deliver("gone-1", receive_count=2)

    # Then that is a failure, as before: notified and parked, never re-sent
    assert s.resend.sent == []
    assert [n["error"]["code"] for n in s.notifier.published] == ["retries_exhausted"]
    assert len(s.queue.parked) == 1
