"""Child process of the memory benchmark: one warmed-up copy, its peak RSS growth on stdout.

Usage: `python -m bench._copy_child SPEC_JSON` (written by bench.copy.rss_growth).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from .common import MB, s3_client
from .copy import copier_for

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(name: str) -> float:
    for line in STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0]) / 1024  # reported in kB
    raise KeyError(name)


def _max_rss_mb() -> float:
    # Linux reports ru_maxrss in kB, macOS in bytes.
    scale = MB if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _reset_peak() -> bool:
    """Resets the kernel's high-water mark (VmHWM) to the current RSS, where Linux allows it."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    s3 = s3_client(spec["endpoint_url"])
    # One copier for both copies, as the finalize function keeps one per container.
    copier = copier_for(s3, spec["warmup_host_port"], spec["host_port"])
    # Warm-up: imports, the S3 client, thread pool and connections are paid before measuring.
    warmup_key = spec["key"] + ".warmup"
    copier.copy(spec["warmup_url"], spec["bucket"], warmup_key)
    s3.delete_object(Bucket=spec["bucket"], Key=warmup_key)
    gc.collect()

    exact = _reset_peak()
    baseline = _status_mb("VmRSS") if STATUS.exists() else _max_rss_mb()
    started = time.perf_counter()
    stored = copier.copy(spec["url"], spec["bucket"], spec["key"])
    seconds = time.perf_counter() - started
    # Without a resettable high-water mark, ru_maxrss may still hold the warm-up's peak;
    # that can only overstate the growth, never hide it.
    peak = _status_mb("VmHWM") if exact else max(_max_rss_mb(), baseline)
    s3.delete_object(Bucket=spec["bucket"], Key=spec["key"])
    return {
        "baseline_mb": baseline,
        "peak_mb": peak,
        "method": "VmHWM" if exact else "ru_maxrss",
        "seconds": seconds,
        "size": stored.size,
    }


def main(argv: list[str]) -> int:
    print(json.dumps(measure(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
