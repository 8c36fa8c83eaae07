"""Copy benchmarks: VideoCopier against s3transfer's upload_file, and the copier's peak memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3

from kling_pipeline.finalize.policy import DownloadPolicy
from kling_pipeline.finalize.upload import VideoCopier
from kling_pipeline.settings import Settings
from kling_pipeline.wavespeed import WaveSpeedClient

from .common import MB, ROOT, Figure, child_env, info, median, s3_client, server_process, timed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "bench-videos"
RATIO_SIZE = 200 * MB
RSS_SIZES = {"50mb": 50 * MB, "500mb": 500 * MB}
#: Copy and upload alternate, and each figure is the median of its rounds.
ROUNDS = 3


def copier_for(s3: S3Client, *host_ports: str) -> VideoCopier:
    """A copier configured as the finalize function builds it, allowed to read `host_ports`."""
    defaults = Settings()
    policy = DownloadPolicy(
        allowed_hosts=(),
        local_hosts=host_ports,
        max_bytes=defaults.max_output_bytes,
        timeout_s=defaults.http_timeout_s,
    )
    return VideoCopier(
        s3,
        policy,
        part_bytes=defaults.copy_part_bytes,
        concurrency=defaults.copy_concurrency,
        attempts=defaults.copy_attempts,
    )


def output_url(simulator: dict[str, str]) -> str:
    """Creates a task through the simulator's HTTP API and returns its output URL."""
    client = WaveSpeedClient(
        simulator["base_url"], lambda: simulator["api_key"], http=urllib3.PoolManager()
    )
    prediction_id = client.submit_generation(
        {"prompt": "benchmark output", "aspect_ratio": "16:9", "duration": 5}
    )
    # The benchmark simulators finish generations instantly; a few reads cover scheduling.
    for _ in range(50):
        prediction = client.read_prediction(prediction_id)
        if prediction.status == "completed":
            return prediction.outputs[0]
    raise RuntimeError(f"simulator task {prediction_id} did not complete")


def download(url: str, path: Path) -> str:
    """Streams `url` to `path` (never whole in memory); returns its SHA-256."""
    hasher = hashlib.sha256()
    response = urllib3.PoolManager().request("GET", url, preload_content=False)
    try:
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered HTTP {response.status}")
        with path.open("wb") as handle:
            for chunk in response.stream(MB):
                hasher.update(chunk)
                handle.write(chunk)
    finally:
        response.release_conn()
    return hasher.hexdigest()


def cpu_seconds() -> tuple[float, float] | None:
    """CPU seconds used so far by this process and by its running children (the servers).

    Information only: on a shared 2-core machine a copy is often CPU-bound, and this shows
    whose CPU a slow round went to. None where /proc is not there to ask.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    own = servers = 0.0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        used = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if int(stat.parent.name) == me:
            own += used
        elif int(fields[1]) == me:
            servers += used
    return own, servers


def cpu_used(before: tuple[float, float] | None) -> str:
    """` (cpu: X s here, Y s servers)` since `before`, or nothing without /proc."""
    after = cpu_seconds()
    if before is None or after is None:
        return ""
    return f" (cpu {after[0] - before[0]:.2f}s here, {after[1] - before[1]:.2f}s servers)"


def copy_ratio(s3: S3Client, simulator: dict[str, str], workdir: Path) -> Figure:
    """Median copy time over median upload_file time of the same bytes to the same server."""
    url = output_url(simulator)
    path = workdir / "output.mp4"
    digest = download(url, path)
    copier = copier_for(s3, simulator["host_port"])
    copies: list[float] = []
    uploads: list[float] = []
    cpu: dict[str, str] = {}

    def run_copy(key: str) -> None:
        before = cpu_seconds()
        stored, seconds = timed(lambda: copier.copy(url, BUCKET, key))
        cpu["copy"] = cpu_used(before)
        if stored.sha256 != digest:
            raise RuntimeError("the copied object differs from the simulator's output")
        copies.append(seconds)
        s3.delete_object(Bucket=BUCKET, Key=key)

    def run_upload(key: str) -> None:
        before = cpu_seconds()
        _, seconds = timed(lambda: s3.upload_file(str(path), BUCKET, key))
        cpu["upload"] = cpu_used(before)
        uploads.append(seconds)
        s3.delete_object(Bucket=BUCKET, Key=key)

    for round_number in range(ROUNDS):
        # Alternating which goes first keeps a warming (or tiring) server from favouring one.
        pair = [run_copy, run_upload] if round_number % 2 == 0 else [run_upload, run_copy]
        for run in pair:
            run(f"bench/ratio-{round_number}-{run.__name__}.mp4")
        info(
            f"copy round {round_number + 1}: copy {copies[-1]:.2f}s{cpu['copy']}, "
            f"upload {uploads[-1]:.2f}s{cpu['upload']}"
        )
    path.unlink()
    return Figure("copy_200mb_ratio", round(median(copies) / median(uploads), 2), "ratio", "<=1.25")


def rss_growth(endpoint_url: str, simulators: dict[str, dict[str, str]], label: str) -> Figure:
    """Peak RSS growth of one copy, measured inside a fresh child process."""
    simulator = simulators[str(RSS_SIZES[label])]
    spec = {
        "endpoint_url": endpoint_url,
        "bucket": BUCKET,
        "key": f"bench/rss-{label}.mp4",
        "warmup_url": output_url(simulators["default"]),
        "warmup_host_port": simulators["default"]["host_port"],
        "url": output_url(simulator),
        "host_port": simulator["host_port"],
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bench._copy_child", json.dumps(spec)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    info(
        f"copy of {label}: RSS {result['baseline_mb']:.1f} MB before, peak "
        f"{result['peak_mb']:.1f} MB ({result['method']}), {result['seconds']:.2f}s"
    )
    growth = round(result["peak_mb"] - result["baseline_mb"], 1)
    return Figure(f"copy_rss_growth_mb_{label}", growth, "MB", "<=64")


def run() -> list[Figure]:
    sizes = ["default", str(RATIO_SIZE), *(str(size) for size in RSS_SIZES.values())]
    with (
        server_process("s3") as s3_server,
        server_process("sim", *sizes) as sim_server,
        tempfile.TemporaryDirectory(prefix="kling-bench-") as workdir,
    ):
        endpoint_url = str(s3_server["endpoint_url"])
        simulators: dict[str, dict[str, str]] = sim_server["simulators"]
        s3 = s3_client(endpoint_url)
        s3.create_bucket(Bucket=BUCKET)
        figures = [copy_ratio(s3, simulators[str(RATIO_SIZE)], Path(workdir))]
        figures += [rss_growth(endpoint_url, simulators, label) for label in RSS_SIZES]
    return figures
