"""The simulator as a whole: a served WaveSpeedApi, started and stopped, and inspected."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..mp4 import VideoBlob
from .api import WaveSpeedApi
from .config import Outage, SimulatorConfig

if TYPE_CHECKING:
    from .server import SimulatorServer


class WaveSpeedSimulator:
    """A WaveSpeed-compatible HTTP server on a local port, with counters and fault injection."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.config.validate()
        self._stopping = threading.Event()
        self.api = WaveSpeedApi(self.config, self._stopping)
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int | None = None) -> WaveSpeedSimulator:
        """Bind and serve in a background thread; returns self."""
        from .server import SimulatorServer

        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        # Encode the shared video frames now, not inside the first download request.
        VideoBlob.min_size()
        bind_port = self.config.port if port is None else port
        server = SimulatorServer((self.config.host, bind_port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"wavespeed-sim-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        self.api.account.schedule_outages(time.monotonic())
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and release the port."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> WaveSpeedSimulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return int(self._server.server_address[1])

    @property
    def host_port(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    # Inspection and control: what tests and benchmarks use.

    def stats(self) -> dict[str, int]:
        return self.api.stats()

    def tasks(self) -> list[dict[str, Any]]:
        """Every paid task in creation order, with its status (and dealt faults) as of now."""
        now = time.monotonic()
        base = self.base_url if self._server is not None else self.config.public_base_url or ""
        with self.api.lock:
            return [self.api.book.snapshot(task, base, now) for task in self.api.book.all()]

    def output_sha256(self, task_id: str, n: int = 0) -> str:
        """SHA-256 of output ``n`` (0-based) of a task (KeyError/IndexError when missing)."""
        return self.api.book.blob(task_id, n).sha256

    def output_size(self, task_id: str, n: int = 0) -> int:
        return self.api.book.blob(task_id, n).size

    def balance_usd(self) -> float:
        """The account balance as the balance endpoint reports it now (refunds included)."""
        return self.api.account.balance_usd(self.api.book.refunded_usd(time.monotonic()))

    def start_outage(self, seconds: float, on: str = "both", form: str = "http") -> None:
        """Answer 5xx (or envelope code 5003) on `on` routes from now for `seconds` (scaled)."""
        self.api.account.start_outage(Outage(0.0, seconds, on, form), time.monotonic())
