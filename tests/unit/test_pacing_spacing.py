"""Unit tests: the shared schedule's spacing keeps every tier under its cap and near its rate."""

from __future__ import annotations

import pytest

from kling_local.simulator.config import TIERS
from kling_pipeline.submit.pacing import US_PER_S, StartPacer, StartRate
from tests.unit.pacing_fakes import FakeClock, FakeSchedule

#: Every tier's rate, and custom contracts: the smallest, a prime, one short of Ultra, twice it.
RATES = sorted({preset.videos_per_minute for preset in TIERS.values()} | {1, 7, 4999, 10000})
NOW_US = 1_700_000_000 * US_PER_S
DAY_US = 86_400 * US_PER_S


def backlog_slots(rate: StartRate, count: int) -> list[int]:
    """The slots a backlog of `count` jobs, all asking at once, is given by the schedule."""
    schedule = FakeSchedule()
    slots = []
    for _ in range(count):
        reservation = schedule.reserve(NOW_US, rate.spacing_us, DAY_US)
        assert reservation.taken
        slots.append(reservation.at_us)
    return slots


@pytest.mark.parametrize("per_minute", RATES)
def test_no_minute_holds_more_than_the_rate_when_starts_run_up_to_the_margin_late(
    per_minute: int,
) -> None:
    # Given a backlog of two minutes' worth of jobs on an account allowing `per_minute`
    rate = StartRate(videos_per_minute=per_minute)
    slots = backlog_slots(rate, 2 * per_minute + 1)

    # When any start goes out as late as the margin allows and the one `per_minute` later on time
    window_us = round(rate.window_s * US_PER_S)
    margin_us = round(rate.margin_s * US_PER_S)
    closest = min(
        (slots[i + per_minute] - margin_us) - slots[i] for i in range(len(slots) - per_minute)
    )

    # Then those two are still a full window apart: no 60 s window (WaveSpeed counts the starts
    # of the last 60 s) ever holds more than `per_minute` starts
    assert closest >= window_us


@pytest.mark.parametrize("per_minute", RATES)
def test_the_schedule_keeps_to_at_least_96_percent_of_the_rate_when_a_backlog_waits(
    per_minute: int,
) -> None:
    # Given a backlog of jobs on an account allowing `per_minute`
    rate = StartRate(videos_per_minute=per_minute)
    slots = backlog_slots(rate, per_minute + 1)

    # When its starts are counted per minute
    achieved = per_minute * 60 * US_PER_S / (slots[-1] - slots[0])

    # Then it runs at no less than 96 % of the rate (the 2 s margin alone costs 3.2 %), never more
    assert 0.96 * per_minute <= achieved < per_minute


def test_a_scaled_minute_is_spaced_as_exactly_as_a_real_one_when_the_simulator_runs_faster() -> (
    None
):
    # Given Ultra on a clock twice as fast (a window of 30 s, a margin of 1 s)
    real = StartRate(videos_per_minute=5000)
    scaled = StartRate(videos_per_minute=5000, window_s=30.0, margin_s=1.0)

    # When their spacings are taken / Then each is exactly its share of 62 s (31 s), no rounding
    assert real.spacing_us == 12_400
    assert scaled.spacing_us == 6_200


def test_starts_land_exactly_on_their_spacing_when_the_schedule_runs_for_a_long_time() -> None:
    # Given Ultra's backlog taken turn by turn through the pacer, its clock moved by float sleeps
    rate = StartRate(videos_per_minute=5000)
    clock = FakeClock(now=1_700_000_000.0)
    pacer = StartPacer(rate, FakeSchedule(), clock=clock, sleep=clock.sleep)
    count = 60_000  # 12 minutes of Ultra

    # When every job takes its turn in order
    turns = [pacer.wait_turn(f"ultra-{i}") for i in range(count)]

    # Then the k-th start is the first plus exactly k spacings: no drift from the float clock
    first = turns[0]
    assert first is not None
    drift = [
        turn.at_us - (first.at_us + k * rate.spacing_us)
        for k, turn in enumerate(turns)
        if turn is not None
    ]
    assert len(drift) == count
    assert set(drift) == {0}


def test_the_first_start_after_an_upgrade_follows_the_old_schedule_when_it_is_still_busy() -> None:
    # Given an item an older deployment (counting milliseconds) left 2.5 s ahead of now
    clock = FakeClock(now=1_700_000_000.0)
    schedule = FakeSchedule()
    schedule.legacy_next_ms = int(clock.now * 1000) + 2_500
    pacer = StartPacer(StartRate(videos_per_minute=500), schedule, clock=clock, sleep=clock.sleep)

    # When a job asks for its turn
    turn = pacer.wait_turn("upgraded-1")

    # Then it starts where the old schedule's next start was, read as milliseconds (not
    # microseconds: then it would start at once), and the schedule goes on from there alone
    assert turn is not None
    assert turn.at_us == (int(1_700_000_000.0 * 1000) + 2_500) * 1000
    assert clock.slept == [pytest.approx(2.5)]
    assert schedule.legacy_next_ms is None
    assert schedule.next_us == turn.at_us + StartRate(videos_per_minute=500).spacing_us


def test_the_schedule_restarts_now_when_the_old_schedule_it_replaces_is_idle() -> None:
    # Given an old `next_ms` a minute in the past
    clock = FakeClock(now=1_700_000_000.0)
    schedule = FakeSchedule()
    schedule.legacy_next_ms = int(clock.now * 1000) - 60_000
    pacer = StartPacer(StartRate(videos_per_minute=500), schedule, clock=clock, sleep=clock.sleep)

    # When a job asks for its turn
    turn = pacer.wait_turn("upgraded-2")

    # Then it starts at once and the old attribute is gone
    assert turn is not None and turn.at_us == int(clock.now * US_PER_S)
    assert clock.slept == []
    assert schedule.legacy_next_ms is None
