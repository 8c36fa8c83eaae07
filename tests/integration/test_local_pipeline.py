"""The local pipeline leaves the process as it found it: environment, moto, warnings, loggers."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
from moto.core.config import default_user_config

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.simulator import SimulatorConfig

FAST = SimulatorConfig(generation_seconds=0.3, processing_after_seconds=0.05)


def process_state() -> dict[str, object]:
    """Everything process-wide a pipeline may touch, as a comparable snapshot."""
    return {
        "environ": dict(os.environ),
        "warning_filters": list(warnings.filters),
        "werkzeug_level": logging.getLogger("werkzeug").level,
        "moto_stepfunctions": dict(default_user_config["stepfunctions"]),
    }


@pytest.mark.parametrize("serve_port", [None, 0], ids=["in-process", "served"])
def test_process_state_is_restored_exactly_when_pipeline_closes(
    monkeypatch: pytest.MonkeyPatch, serve_port: int | None
) -> None:
    # Given variables the pipeline sets that already exist with other values, and others absent
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a-real-looking-key")
    monkeypatch.setenv("POLL_DEADLINE_S", "7")
    for absent in ("JOBS_TABLE", "WAVESPEED_API_BASE", "MOTO_PORT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(absent, raising=False)
    before = process_state()

    # When a pipeline runs a job and closes
    with LocalPipeline(LocalOptions(simulator=FAST, serve_port=serve_port)) as pipeline:
        pipeline.send_prompt("a paper lantern")
        result = pipeline.run_until_idle(60)
        during = dict(os.environ)
    after = process_state()

    # Then it did change the environment while it ran, and put every bit back afterwards
    assert [n["status"] for n in result.notifications] == ["completed"]
    assert during["AWS_REGION"] == "us-east-1"
    assert "JOBS_TABLE" in during
    assert after == before


@pytest.mark.parametrize("serve_port", [None, 0], ids=["in-process", "served"])
def test_second_pipeline_starts_clean_when_first_was_closed(serve_port: int | None) -> None:
    # Given a pipeline that ran and closed
    with LocalPipeline(LocalOptions(simulator=FAST, serve_port=serve_port)) as first:
        first.send_prompt("a first lantern")
        first.run_until_idle(60)

    # When another pipeline runs in the same process
    with LocalPipeline(LocalOptions(simulator=FAST, serve_port=serve_port)) as second:
        second.send_prompt("a second lantern")
        result = second.run_until_idle(60)
        stored = [o["Key"] for o in second.objects() if o["Key"].endswith(".mp4")]

    # Then it sees only its own job, and its video landed in its own bucket
    assert [n["input"]["prompt"] for n in result.notifications] == ["a second lantern"]
    assert len(stored) == 1
