"""The simulator itself: lifecycle, counters, and the operations the HTTP layer calls."""

from __future__ import annotations

import hmac
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..mp4 import VideoBlob
from .blobs import Blob
from .config import COUNTERS, MARKER_DROP_SUBMIT, MARKER_SLOW_SUBMIT, SimulatorConfig
from .faults import SubmitFaults
from .optimizer import PromptOptimizer
from .tasks import TERMINAL, Task, TaskBook
from .wire import Reply, envelope, error, json_object, ok, validate_t2v

if TYPE_CHECKING:
    from .server import SimulatorServer


class WaveSpeedSimulator:
    """A WaveSpeed-compatible HTTP server on a local port, with counters and fault injection."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.config.validate()
        self._lock = threading.RLock()
        self._book = TaskBook(self.config, self._lock)
        self._submit_faults = SubmitFaults(self.config, self._book.rng)
        self._optimizer = PromptOptimizer()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._stopping = threading.Event()
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

    # Inspection: what tests and benchmarks read.

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def tasks(self) -> list[dict[str, Any]]:
        """Every paid task in creation order, with its status (and dealt faults) as of now."""
        now = time.monotonic()
        base = self.base_url if self._server is not None else self.config.public_base_url or ""
        with self._lock:
            return [self._book.snapshot(task, base, now) for task in self._book.all()]

    def output_sha256(self, task_id: str, n: int = 0) -> str:
        """SHA-256 of output ``n`` of a task (KeyError/IndexError when it does not exist)."""
        return self._book.blob(task_id, n).sha256

    def output_size(self, task_id: str, n: int = 0) -> int:
        return self._book.blob(task_id, n).size

    # Operations: what the HTTP layer calls, one per route.

    def count(self, counter: str, delta: int = 1) -> None:
        with self._lock:
            self._counters[counter] += delta

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the simulator stops (so stop() never hangs)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.config.api_key.encode()
        )

    def submit(self, raw: bytes, base: str) -> Reply:
        """A Kling submit: validate, apply faults, create the paid task."""
        self.wait(self.config.submit_latency_seconds)
        body, message = json_object(raw)
        if body is None:
            return error(400, message)
        params, message = validate_t2v(body)
        if params is None:
            return error(400, message)
        prompt: str = params["prompt"]
        with self._lock:
            rejection = self._submit_faults.rejection(prompt, self._book.active_count())
            if rejection is not None:
                return rejection
            task = self._book.create(params)
            self._counters["tasks_created"] += 1
        if MARKER_DROP_SUBMIT in prompt:
            return Reply(0, None, drop=True, task=task)
        delay = self.config.slow_submit_seconds if MARKER_SLOW_SUBMIT in prompt else 0.0
        sync = body.get("enable_sync_mode") is True
        if sync:
            self._wait_terminal(task)
        return Reply(200, None, delay_seconds=delay, task=task, sync=sync)

    def submitted(self, reply: Reply, base: str) -> dict[str, Any]:
        """The envelope a submit answers with, rendered when it is sent (after any delay)."""
        assert reply.task is not None
        return envelope(self._book.data(reply.task, base, as_created=not reply.sync))

    def optimize(self, raw: bytes, base: str) -> Reply:
        self.count("optimizer_requests")
        return self._optimizer.optimize(raw, base)

    def result(self, task_id: str, base: str) -> Reply:
        """A status read of a video task or an optimizer prediction."""
        self.count("result_requests")
        self.wait(self.config.poll_latency_seconds)
        optimized = self._optimizer.get(task_id)
        task = self._book.get(task_id)
        if optimized is None and task is None:
            return error(404, f"prediction {task_id} not found")
        if task is not None and self._book.take_poll_500(task):
            return error(500, "Internal server error")
        rate = self.config.poll_5xx_rate
        with self._lock:
            if rate and self._book.rng.random() < rate:
                code = self._book.rng.choice((500, 502, 503))
                return error(code, "Upstream temporarily unavailable")
        if task is not None:
            return ok(self._book.data(task, base))
        return ok(optimized)

    def start_download(self, task_id: str, n: int, *, head: bool) -> tuple[Blob, bool] | None:
        """The output to serve and whether to cut it short; None when there is none (yet)."""
        started = self._book.start_download(task_id, n, head=head)
        if started is not None and not head:
            self.count("downloads_started")
        return started

    def _wait_terminal(self, task: Task) -> None:
        while not self._stopping.is_set() and self._book.status(task, time.monotonic()) not in (
            TERMINAL
        ):
            self._stopping.wait(0.02)
