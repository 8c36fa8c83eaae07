"""`make bench`: runs every benchmark, prints BENCH lines and writes bench-results.json.

A missed goal is reported, not failed: the exit status is non-zero only when a benchmark could
not produce its figures at all.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable

from . import cold_start, copy, pacing, schedule, submit, webhook
from .common import ROOT, Figure, info

RESULTS = ROOT / "bench-results.json"

# Cold starts first, while no server of the other benchmarks is using the CPU.
AREAS: dict[str, Callable[[], list[Figure]]] = {
    "cold_start": cold_start.run,
    "schedule": schedule.run,
    "submit": submit.run,
    "copy": copy.run,
    "webhook": webhook.run,
    "pacing": pacing.run,
}


def main() -> int:
    figures: list[Figure] = []
    broken: list[str] = []
    for area, run in AREAS.items():
        info(f"{area} ...")
        started = time.perf_counter()
        try:
            produced = run()
        except Exception:  # noqa: BLE001 - one broken area must not hide the others' figures
            traceback.print_exc()
            broken.append(area)
            continue
        info(f"{area} done in {time.perf_counter() - started:.1f}s")
        for figure in produced:
            print(figure.line(), flush=True)
        figures += produced
    results = {f.name: {"value": f.value, "unit": f.unit, "goal": f.goal} for f in figures}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    missed = [f for f in figures if not f.met]
    for figure in missed:
        info(f"goal missed: {figure.name} = {figure.value} {figure.unit} (goal {figure.goal})")
    info(f"{len(figures) - len(missed)} of {len(figures)} goals met; results in {RESULTS.name}")
    if broken:
        info(f"could not measure: {', '.join(broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
