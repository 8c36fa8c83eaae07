"""The start schedule in the jobs table (moto): the same answers as its fake, and upgrades."""

from __future__ import annotations

import random
from typing import Any

from kling_local.pipeline import LocalPipeline
from kling_pipeline.submit.pacing import US_PER_S, Reservation
from kling_pipeline.submit.pacing_table import SCHEDULE_KEY, TableStartSchedule
from tests.unit.pacing_fakes import FakeSchedule

NOW_US = 1_700_000_000 * US_PER_S
SPACING_US = 124_000  # Silver: 62 s / 500


def schedule_item(pipeline: LocalPipeline) -> dict[str, Any]:
    item: dict[str, Any] = pipeline.dynamodb.get_item(
        TableName=pipeline.names["JobsTable"], Key=SCHEDULE_KEY, ConsistentRead=True
    ).get("Item", {})
    return item


def put_schedule(pipeline: LocalPipeline, **numbers: int) -> None:
    item: Any = {**SCHEDULE_KEY, **{name: {"N": str(n)} for name, n in numbers.items()}}
    pipeline.dynamodb.put_item(TableName=pipeline.names["JobsTable"], Item=item)


def test_the_table_answers_as_its_fake_does_when_given_the_same_requests(
    pipeline: LocalPipeline,
) -> None:
    # Given the schedule in the jobs table and its in-memory fake, both left by an older
    # deployment 0.4 s ahead, and a seeded mix of jobs asking, giving back and time passing
    table = TableStartSchedule(pipeline.dynamodb, pipeline.names["JobsTable"])
    fake = FakeSchedule()
    legacy_ms = NOW_US // 1000 + 400
    put_schedule(pipeline, next_ms=legacy_ms)
    fake.legacy_next_ms = legacy_ms
    rng = random.Random(11)
    now_us = NOW_US
    answers: list[tuple[object, object]] = []

    # When both are asked the same things
    for _ in range(120):
        now_us += rng.choice((0, 0, 10_000, 124_000, 400_000, 3 * US_PER_S))
        reservations: list[Reservation] = [
            schedule.reserve(now_us, SPACING_US, US_PER_S // 2) for schedule in (table, fake)
        ]
        answers.append((reservations[0], reservations[1]))
        if reservations[1].taken and rng.random() < 0.2:
            given = [s.give_back(reservations[1].at_us, SPACING_US) for s in (table, fake)]
            answers.append((given[0], given[1]))

    # Then every answer matches, both refused a start beyond the horizon at least once, and
    # both gave a slot back at least once
    assert [a for a, _ in answers] == [b for _, b in answers]
    assert any(isinstance(a, Reservation) and not a.taken for a, _ in answers)
    assert any(a is True for a, _ in answers)
    assert int(schedule_item(pipeline)["next_us"]["N"]) == fake.next_us


def test_the_first_start_after_an_upgrade_follows_the_old_millisecond_schedule(
    pipeline: LocalPipeline,
) -> None:
    # Given the item an older deployment left: its next start 2 s ahead, in milliseconds
    table = TableStartSchedule(pipeline.dynamodb, pipeline.names["JobsTable"])
    legacy_ms = NOW_US // 1000 + 2_000
    put_schedule(pipeline, next_ms=legacy_ms)

    # When the new code takes two starts
    first = table.reserve(NOW_US, SPACING_US, 3 * US_PER_S)
    second = table.reserve(NOW_US, SPACING_US, 3 * US_PER_S)

    # Then the first is the old schedule's next start read as milliseconds, the second one
    # spacing later, and only the microsecond attribute is left
    assert first == Reservation(legacy_ms * 1000, taken=True)
    assert second == Reservation(legacy_ms * 1000 + SPACING_US, taken=True)
    item = schedule_item(pipeline)
    assert "next_ms" not in item
    assert int(item["next_us"]["N"]) == legacy_ms * 1000 + 2 * SPACING_US


def test_an_old_schedule_far_ahead_is_not_taken_when_it_lies_beyond_the_horizon(
    pipeline: LocalPipeline,
) -> None:
    # Given an old schedule 20 minutes ahead
    table = TableStartSchedule(pipeline.dynamodb, pipeline.names["JobsTable"])
    legacy_ms = NOW_US // 1000 + 1_200_000
    put_schedule(pipeline, next_ms=legacy_ms)

    # When a job asks with a 15-minute horizon
    answer = table.reserve(NOW_US, SPACING_US, 900 * US_PER_S)

    # Then it is told when the first free start is, and nothing changes
    assert answer == Reservation(legacy_ms * 1000, taken=False)
    assert "next_us" not in schedule_item(pipeline)


def test_a_turn_kept_by_an_older_deployment_is_not_read_as_microseconds(
    pipeline: LocalPipeline,
) -> None:
    # Given a job whose turn an older deployment kept in milliseconds
    table = TableStartSchedule(pipeline.dynamodb, pipeline.names["JobsTable"])
    old: Any = {"pk": {"S": "pace#job#kept-1"}, "at_ms": {"N": str(NOW_US // 1000 + 5_000)}}
    pipeline.dynamodb.put_item(TableName=pipeline.names["JobsTable"], Item=old)

    # When the new code looks for it / Then there is none: the job takes a new turn
    assert table.held("kept-1") is None

    # And a turn the new code keeps is read back exactly
    table.hold("kept-1", NOW_US + 7)
    assert table.held("kept-1") == NOW_US + 7
