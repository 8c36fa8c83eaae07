"""Shared pieces of the benchmarks: figures, timing, child processes and local servers."""

from __future__ import annotations

import json
import operator
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(str(ROOT / part) for part in ("layers/common", "local", "."))
MB = 1024 * 1024
T = TypeVar("T")

#: Credentials moto accepts; nothing here may ever reach a real AWS endpoint.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Figure:
    """One benchmark result and the goal it is judged against."""

    name: str
    value: float
    unit: str
    goal: str

    @property
    def met(self) -> bool:
        # Two-character operators first, so "<=1.25" is not read as "<" "=1.25".
        for symbol in sorted(_OPERATORS, key=len, reverse=True):
            if self.goal.startswith(symbol):
                return _OPERATORS[symbol](self.value, float(self.goal[len(symbol) :]))
        raise ValueError(f"goal {self.goal!r} of {self.name} has no comparison operator")

    def line(self) -> str:
        return f"BENCH {self.name} {self.value} {self.unit} goal {self.goal}"


def info(message: str) -> None:
    """Progress for humans; stdout is reserved for BENCH lines."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """What `action` returned and the wall-clock seconds it took."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark child: this checkout's packages, fake AWS credentials."""
    env = {**os.environ, **FAKE_AWS_ENV, "PYTHONPATH": PYTHONPATH}
    env.update(extra or {})
    return env


def s3_client(endpoint_url: str) -> S3Client:
    """An S3 client for the local moto server, configured like the functions' clients."""
    import boto3
    from botocore.config import Config

    # Same retry mode and pool size as kling_pipeline.clients, so the copier runs as deployed.
    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_AWS_ENV["AWS_SESSION_TOKEN"],
        config=config,
    )
    return client


@contextmanager
def server_process(*args: str) -> Iterator[dict[str, Any]]:
    """Runs `python -m bench._servers ARGS` and yields the addresses it announces.

    The child serves until its stdin closes, so it also goes away if this process dies.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", *args],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        announcement = process.stdout.readline()
        if not announcement:
            raise RuntimeError(f"bench._servers {' '.join(args)} exited before serving")
        yield dict(json.loads(announcement))
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
