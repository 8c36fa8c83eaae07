"""Shared fixtures: the local pipeline (moto resources built from template.yaml) and events."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kling_local.pipeline import LocalOptions, LocalPipeline, RunResult
from kling_local.simulator import SimulatorConfig, WaveSpeedSimulator

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"

PipelineFactory = Callable[..., LocalPipeline]
SimFactory = Callable[..., WaveSpeedSimulator]
ServerStarter = Callable[[socketserver.BaseServer], str]
RUN_TIMEOUT_S = 60.0


def load_event(name: str) -> dict[str, Any]:
    """An event from events/, the same file `sam local invoke -e` uses."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture
def make_pipeline() -> Iterator[PipelineFactory]:
    """Starts a local pipeline; keyword arguments are LocalOptions fields, plus `simulator`
    fields via `sim=SimulatorConfig(...)`."""
    started: list[LocalPipeline] = []

    def factory(sim: SimulatorConfig | None = None, **options: Any) -> LocalPipeline:
        config = sim or SimulatorConfig(generation_seconds=0.5, processing_after_seconds=0.1)
        pipeline = LocalPipeline(LocalOptions(simulator=config, **options))
        pipeline.__enter__()
        started.append(pipeline)
        return pipeline

    yield factory
    for pipeline in reversed(started):
        pipeline.close()


@pytest.fixture
def pipeline(make_pipeline: PipelineFactory) -> LocalPipeline:
    """A pipeline with a fast simulator and a 1-second poll schedule."""
    return make_pipeline()


@pytest.fixture
def served() -> Iterator[LocalPipeline]:
    """The local pipeline served over HTTP and published as stack kling-local, driven in a
    thread, as `runner --serve` does (for the CLI pointed at its endpoint)."""
    options = LocalOptions(
        simulator=SimulatorConfig(generation_seconds=0.5, processing_after_seconds=0.1),
        serve_port=0,
    )
    stop = threading.Event()
    with LocalPipeline(options) as pipeline:
        pipeline.publish_stack("kling-local")
        driver = threading.Thread(target=pipeline.serve_forever, args=(stop,), daemon=True)
        driver.start()
        yield pipeline
        stop.set()
        driver.join(timeout=10)


@pytest.fixture
def make_sim(request: pytest.FixtureRequest) -> Iterator[SimFactory]:
    """Starts WaveSpeed simulators: the test module's `SIM_DEFAULTS`, then keyword overrides."""
    started: list[WaveSpeedSimulator] = []
    defaults: dict[str, Any] = getattr(request.module, "SIM_DEFAULTS", {})

    def factory(**overrides: Any) -> WaveSpeedSimulator:
        sim = WaveSpeedSimulator(SimulatorConfig(**{**defaults, **overrides})).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> WaveSpeedSimulator:
    return make_sim()


def simulator_of(pipeline: LocalPipeline) -> WaveSpeedSimulator:
    assert pipeline.simulator is not None, "this pipeline runs without the simulator"
    return pipeline.simulator


def run(pipeline: LocalPipeline) -> RunResult:
    """Drives the pipeline to idle and insists every job reached its terminal notification."""
    result = pipeline.run_until_idle(RUN_TIMEOUT_S)
    assert result.unfinished == [], f"jobs without a terminal notification: {result.unfinished}"
    return result


@pytest.fixture
def http_servers() -> Iterator[ServerStarter]:
    """Serves a test HTTP server in a thread; returns its host:port; shuts all down after."""
    servers: list[socketserver.BaseServer] = []

    def start(server: socketserver.BaseServer) -> str:
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        address: Any = server.server_address
        return f"{address[0]}:{address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
