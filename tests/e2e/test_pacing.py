"""The whole pipeline under a WaveSpeed start-rate cap: concurrent submitters, 429s, redrive."""

from __future__ import annotations

from datetime import UTC, datetime

from kling_local.pipeline import LocalPipeline, RunResult
from kling_local.poller import concurrent_pollers
from kling_local.simulator import SimulatorConfig
from tests.conftest import PipelineFactory, run, simulator_of
from tests.e2e.test_exactly_once import redrive_dead_letters

#: The simulator's clock at 1/20: a rate "minute" lasts 3 s.
TIME_SCALE = 0.05
#: The pipeline's rate window on the same clock; the margin wider than 2 s scaled (0.1 s), for a
#: machine shared with other test runs.
PACED_ENV = {"RATE_WINDOW_S": "3", "RATE_MARGIN_S": "0.5", "PACE_MAX_WAIT_S": "1"}


def paced(
    make_pipeline: PipelineFactory,
    *,
    account_per_minute: int,
    paced_per_minute: int,
    budget: dict[str, str] | None = None,
) -> LocalPipeline:
    """A pipeline paced at `paced_per_minute` against an account allowing `account_per_minute`."""
    sim = SimulatorConfig(
        generation_seconds=0.3,
        processing_after_seconds=0.1,
        videos_per_minute=account_per_minute,
        time_scale=TIME_SCALE,
    )
    return make_pipeline(
        sim=sim,
        parameter_overrides={
            "WaveSpeedTier": "custom",
            "WaveSpeedVideosPerMinute": str(paced_per_minute),
            # The template's minimum: any attempt counted as failed would show quickly.
            "MaxReceiveCount": "2",
        },
        env={**PACED_ENV, **(budget or {})},
        # Longer than any one record takes here, even on a loaded machine: with the local 2 s
        # and MaxReceiveCount 2, a slow record would reach the DLQ by timing, not by a failed
        # attempt (deployed, the visibility timeout is 6 x the function's timeout).
        visibility_timeout_s=15,
    )


def statuses(result: RunResult) -> dict[str, list[str]]:
    return {job: [n["status"] for n in notes] for job, notes in result.by_job().items()}


def test_concurrent_submitters_stay_under_the_cap_when_three_minutes_of_jobs_arrive_at_once(
    make_pipeline: PipelineFactory,
) -> None:
    # Given an account allowing 4 starts per (scaled) minute, and 12 jobs sent at once
    pipeline = paced(make_pipeline, account_per_minute=4, paced_per_minute=4)
    for i in range(12):
        pipeline.send_prompt(f"A paced lantern {i}", job_id=f"paced-{i}")

    # When four submit functions poll the queue at the same time
    with concurrent_pollers(pipeline.poll_queues_once, 3):
        result = run(pipeline)

    # Then every job completed once, with one paid POST each, and WaveSpeed hardly ever had to
    # refuse one: unpaced, 8 of the 12 first POSTs alone would get a 429. (The simulator runs
    # in this busy process, so a POST held up by half a second can still meet a full window.)
    assert statuses(result) == {f"paced-{i}": ["completed"] for i in range(12)}
    stats = simulator_of(pipeline).stats()
    assert stats["tasks_created"] == 12
    assert stats["submit_requests"] - stats["tasks_created"] <= 2
    assert pipeline.dead_letters() == []


def test_jobs_are_not_given_up_when_another_client_spends_the_accounts_rate(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a pipeline paced for 30 starts a minute on an account that, shared with another
    # client, has only 2 left: a burst of 429s
    pipeline = paced(make_pipeline, account_per_minute=2, paced_per_minute=30)
    for i in range(6):
        pipeline.send_prompt(f"A crowded harbour {i}", job_id=f"crowded-{i}")

    # When the pipeline runs with two submit functions
    with concurrent_pollers(pipeline.poll_queues_once, 1):
        result = run(pipeline)

    # Then WaveSpeed refused some POSTs, yet every job completed once: no retries_exhausted
    stats = simulator_of(pipeline).stats()
    assert stats["submit_requests"] > stats["tasks_created"] == 6
    assert statuses(result) == {f"crowded-{i}": ["completed"] for i in range(6)}
    assert pipeline.dead_letters() == []


def test_a_redriven_job_keeps_its_identity_when_it_waits_for_its_turn(
    make_pipeline: PipelineFactory,
) -> None:
    # Given two jobs that ran and a third parked over the $2.60 daily budget
    pipeline = paced(
        make_pipeline, account_per_minute=2, paced_per_minute=2, budget={"DAILY_BUDGET_USD": "2.6"}
    )
    for i in range(3):
        pipeline.send_prompt(f"A budget lighthouse {i}", job_id=f"budget-{i}")
    first = run(pipeline)
    parked = [job for job, states in statuses(first).items() if states == ["failed"]]
    assert len(parked) == 1

    # When the next day's budget is there, the DLQ is redriven and a new job arrives with it,
    # so that one of them has to wait for the account's next start
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    pipeline.dynamodb.delete_item(
        TableName=pipeline.names["JobsTable"], Key={"pk": {"S": f"budget#{today}"}}
    )
    assert redrive_dead_letters(pipeline) == 1
    pipeline.send_prompt("A fresh lighthouse", job_id="budget-fresh")
    second = run(pipeline)

    # Then the redriven job runs under its own id, once; nothing is paid twice
    assert statuses(second)[parked[0]] == ["failed", "completed"]
    assert statuses(second)["budget-fresh"] == ["completed"]
    assert simulator_of(pipeline).stats()["tasks_created"] == 4
    assert pipeline.dead_letters() == []
