"""The simulator's settings, the models it serves and the prompt markers that inject faults."""

from __future__ import annotations

from dataclasses import dataclass

from ..mp4 import VideoBlob

MODEL = "kwaivgi/kling-v2.0-t2v-master"
OPTIMIZER_MODEL = "wavespeed-ai/prompt-optimizer"
MODEL_PATH = f"/api/v3/{MODEL}"
OPTIMIZER_PATH = f"/api/v3/{OPTIMIZER_MODEL}"

ASPECT_RATIOS = ("16:9", "9:16", "1:1")
DURATIONS = (5, 10)

MARKER_FAIL = "[sim:fail]"
MARKER_CANCEL = "[sim:cancel]"
MARKER_TIMEOUT = "[sim:timeout]"
MARKER_NSFW = "[sim:nsfw]"
MARKER_TWO_OUTPUTS = "[sim:two-outputs]"
MARKER_CUT_ONCE = "[sim:cut-once]"
MARKER_TRUNCATE = "[sim:truncate]"
MARKER_NOT_MP4 = "[sim:not-mp4]"
MARKER_429_ONCE = "[sim:429-once]"
MARKER_CODE_1001 = "[sim:code-1001]"
MARKER_500_SUBMIT = "[sim:500-submit]"
MARKER_SLOW_SUBMIT = "[sim:slow-submit]"
MARKER_DROP_SUBMIT = "[sim:drop-submit]"
MARKER_OPTIMIZER_FAIL = "[sim:optimizer-fail]"
MARKER_POLL_500_ONCE = "[sim:poll-500-once]"
MARKERS = (
    MARKER_FAIL, MARKER_CANCEL, MARKER_TIMEOUT, MARKER_NSFW, MARKER_TWO_OUTPUTS,
    MARKER_CUT_ONCE, MARKER_TRUNCATE, MARKER_NOT_MP4, MARKER_429_ONCE, MARKER_CODE_1001,
    MARKER_500_SUBMIT, MARKER_SLOW_SUBMIT, MARKER_DROP_SUBMIT, MARKER_OPTIMIZER_FAIL,
    MARKER_POLL_500_ONCE,
)  # fmt: skip

COUNTERS = (
    "submit_requests",
    "tasks_created",
    "optimizer_requests",
    "result_requests",
    "downloads_started",
    "downloads_completed",
    "unauthorized",
)

_RATES = (
    "submit_429_rate",
    "poll_5xx_rate",
    "fail_rate",
    "cancel_rate",
    "cut_once_rate",
    "truncate_rate",
)
_DURATIONS = (
    "generation_seconds",
    "processing_after_seconds",
    "submit_latency_seconds",
    "poll_latency_seconds",
    "slow_submit_seconds",
)


@dataclass
class SimulatorConfig:
    """Behaviour of a simulator instance; every fault is off by default."""

    api_key: str = "sim-test-key"
    host: str = "127.0.0.1"
    port: int = 0
    # Output URLs normally echo the request's Host header; set this to force another base.
    public_base_url: str | None = None
    generation_seconds: float = 1.0
    processing_after_seconds: float = 0.2
    output_size: int | None = None
    submit_latency_seconds: float = 0.0
    poll_latency_seconds: float = 0.0
    slow_submit_seconds: float = 30.0
    seed: int = 0
    submit_429_rate: float = 0.0
    poll_5xx_rate: float = 0.0
    fail_rate: float = 0.0
    cancel_rate: float = 0.0
    cut_once_rate: float = 0.0
    truncate_rate: float = 0.0
    max_concurrency: int | None = None
    verbose: bool = False

    def validate(self) -> None:
        """Raise ValueError for settings the simulator cannot honour."""
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.fail_rate + self.cancel_rate > 1.0:
            raise ValueError("fail_rate + cancel_rate must not exceed 1")
        for name in _DURATIONS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.output_size is not None and self.output_size < VideoBlob.min_size():
            raise ValueError(f"output_size must be at least {VideoBlob.min_size()} bytes")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
