"""`--parameter-overrides`: template parameters apply to the local run as given, or stop it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.runner import main
from kling_local.simulator import SimulatorConfig
from kling_pipeline.settings import PollSchedule, load_settings
from tests.conftest import PipelineFactory, SimFactory, simulator_of

FAST = ["--generation-seconds", "0.3", "--quiet"]
SIM_DEFAULTS = {"generation_seconds": 0.3, "processing_after_seconds": 0.05}


def notifications(out: Path) -> list[dict[str, Any]]:
    lines = (out / "notifications.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_budget_override_lets_one_job_through_and_parks_the_next_when_given(
    tmp_path: Path,
) -> None:
    # Given a $1.30 daily budget on the command line, and two 5-second jobs of $1.30 each
    out = tmp_path / "out"
    prompts = ["--prompt", "a sunrise within budget", "--prompt", "a sunset over budget"]

    # When the runner runs them
    code = main([*prompts, "--parameter-overrides", "DailyBudgetUsd=1.3", "--out", str(out), *FAST])

    # Then exactly one completes and the other is refused for the budget, nothing else
    assert code == 0
    outcomes = sorted((n["status"], (n["error"] or {}).get("code")) for n in notifications(out))
    assert outcomes == [("completed", None), ("failed", "budget_exceeded")]


def test_deadline_override_applies_in_real_seconds_when_given(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a 60-second deadline (the template's minimum; the local shortcut is 120 s) and a
    # generation that takes 90 seconds
    pipeline = make_pipeline(
        parameter_overrides={"PollDeadlineSeconds": "60"},
        sim=SimulatorConfig(generation_seconds=90),
    )
    pipeline.send_prompt("A very slow sunrise", job_id="slow-1")

    # When the pipeline runs (longer than the suite's usual bound: the deadline is a minute)
    result = pipeline.run_until_idle(180)

    # Then the job fails on the given deadline, before the video would have been ready
    assert result.unfinished == []
    [note] = result.notifications
    assert (note["status"], note["error"]["code"]) == ("failed", "deadline_passed")
    assert simulator_of(pipeline).tasks()[0]["status"] != "completed"


def poll_schedule(**options: Any) -> PollSchedule:
    """The poll schedule the functions of a pipeline with these options read."""
    fast = SimulatorConfig(generation_seconds=0.3, processing_after_seconds=0.05)
    with LocalPipeline(LocalOptions(simulator=fast, **options)):
        return load_settings().poll


@pytest.mark.parametrize(
    ("name", "field", "shortcut"),
    [
        ("PollIntervalSeconds", "interval_s", 1),
        ("PollFirstWaitSeconds", "first_wait_s", 1),
        ("PollDeadlineSeconds", "deadline_s", 120),
        ("PollMaxIntervalSeconds", "max_interval_s", 1),
        ("PollQueuedIntervalSeconds", "queued_interval_s", 1),
        ("WebhookFallbackSeconds", "webhook_wait_s", 3),
    ],
)
def test_override_wins_over_the_local_shortcut_when_both_apply(
    name: str, field: str, shortcut: int
) -> None:
    # Given a pipeline with the local shortcut, then one with an override of the same parameter
    with_shortcut = poll_schedule()
    overridden = poll_schedule(parameter_overrides={name: "600"})

    # Then the functions see the shortcut, then the overriding value as given
    assert getattr(with_shortcut, field) == shortcut
    assert getattr(overridden, field) == 600


@pytest.mark.parametrize(
    "overrides",
    [
        ["PollDeadlineSeconds=10"],  # below MinValue
        ["PollDeadlineSeconds=soon"],  # not a Number
        ["MaxReceiveCount=50"],  # above MaxValue
        ["EnableTracing=yes"],  # not in AllowedValues
        ["PollBackoff=fast"],  # AllowedPattern
        ["DailyBudgetUSD=5"],  # no such parameter
        ["DailyBudgetUsd"],  # not NAME=VALUE
        ["DailyBudgetUsd=5", "LogRetentionDays=2"],  # one good, one refused
    ],
)
def test_runner_exits_before_sending_anything_when_an_override_is_refused(
    overrides: list[str],
    make_sim: SimFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a WaveSpeed stand-in that counts every request, and an override the template refuses
    server = make_sim()
    monkeypatch.setenv("WAVESPEED_API_KEY", server.config.api_key)
    environment = dict(os.environ)

    # When the runner is asked to run a prompt with it
    code = main(
        ["--api-base", server.base_url, "--prompt", "a kite", "--quiet"]
        + ["--parameter-overrides", *overrides]
    )

    # Then it exits non-zero naming the parameter, and nothing reached the API or the process
    assert code == 2
    err = capsys.readouterr().err
    assert "--parameter-overrides" in err
    assert overrides[-1].split("=")[0] in err
    stats = server.stats()
    assert (stats["tasks_created"], stats["submit_requests"]) == (0, 0)
    assert dict(os.environ) == environment
