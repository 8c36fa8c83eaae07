"""Cold-start benchmark: import time of each handler module against `import boto3`.

Every sample is a fresh interpreter, as a new Lambda container is. boto3 is the floor: every
handler needs it, so the ratio shows what the handler adds on top (Powertools, the domain
package) on a machine whose absolute speed is unknown and shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from .common import ROOT, Figure, child_env, info, median

HANDLERS = ("submit", "poll", "finalize")
#: Medians of 11 interleaved rounds: with 5, one busy moment on a shared machine moved a ratio
#: by 0.1-0.2 (1.22 and 1.41 for the same code).
RUNS = 11
BASELINE = "boto3"

# The timer starts after interpreter start-up and importlib itself, so only the import counts.
# The module is loaded by path under the name Lambda gives it.
_PROBE = """
import importlib.util, sys, time
target = sys.argv[1]
started, cpu_started = time.perf_counter(), time.process_time()
if target == "boto3":
    import boto3
else:
    spec = importlib.util.spec_from_file_location("app", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
print(time.perf_counter() - started, time.process_time() - cpu_started)
"""


def _function_env(pycache: str) -> dict[str, str]:
    """What a deployed function finds in its environment, with the example values of events/."""
    values: dict[str, str] = json.loads((ROOT / "events" / "env.json").read_text())["Parameters"]
    env = child_env(
        {
            **values,
            "POWERTOOLS_SERVICE_NAME": "kling-pipeline",
            "POWERTOOLS_METRICS_NAMESPACE": "KlingPipeline",
            # Bytecode goes to a scratch directory, not next to the sources in the checkout.
            "PYTHONPYCACHEPREFIX": pycache,
        }
    )
    # Deployed code imports compiled bytecode (the runtime's boto3, the layer's .pyc). With
    # PYTHONDONTWRITEBYTECODE inherited, nothing would be cached in the scratch prefix and every
    # sample would compile all of boto3 and the handler from source: a compile benchmark.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _import_seconds(target: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one import in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=120,
    )
    wall, cpu = completed.stdout.split()
    return float(wall), float(cpu)


def run() -> list[Figure]:
    targets = {BASELINE: BASELINE}
    targets.update({name: str(ROOT / "functions" / name / "app.py") for name in HANDLERS})
    walls: dict[str, list[float]] = {name: [] for name in targets}
    cpus: dict[str, list[float]] = {name: [] for name in targets}
    with tempfile.TemporaryDirectory(prefix="kling-bench-pycache-") as pycache:
        env = _function_env(pycache)
        # A deployed package ships compiled or compiles once; the first import here would
        # also pay the compilation, so it is discarded.
        for target in targets.values():
            _import_seconds(target, env)
        # Interleaved rounds spread the machine's noise evenly over baseline and handlers.
        for _ in range(RUNS):
            for name, target in targets.items():
                wall, cpu = _import_seconds(target, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
    floor, cpu_floor = median(walls[BASELINE]), median(cpus[BASELINE])
    figures = []
    for name in HANDLERS:
        seconds, cpu = median(walls[name]), median(cpus[name])
        # CPU time is shown too: on a shared machine it is the steadier of the two.
        info(
            f"import {name} handler: {seconds * 1000:.0f} ms (boto3 {floor * 1000:.0f} ms); "
            f"CPU {cpu * 1000:.0f} ms (boto3 {cpu_floor * 1000:.0f} ms, ratio "
            f"{cpu / cpu_floor:.2f})"
        )
        figures.append(
            Figure(f"cold_import_ratio_{name}", round(seconds / floor, 2), "ratio", "<=1.3")
        )
    return figures
