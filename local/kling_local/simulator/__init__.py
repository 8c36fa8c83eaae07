"""Local HTTP simulator of the WaveSpeed REST API (Kling V2.0 T2V + prompt optimizer)."""

from .config import (
    COUNTERS,
    MARKERS,
    MODEL,
    MODEL_PATH,
    OPTIMIZER_MODEL,
    OPTIMIZER_PATH,
    SimulatorConfig,
)
from .core import WaveSpeedSimulator

__all__ = [
    "COUNTERS",
    "MARKERS",
    "MODEL",
    "MODEL_PATH",
    "OPTIMIZER_MODEL",
    "OPTIMIZER_PATH",
    "SimulatorConfig",
    "WaveSpeedSimulator",
]
