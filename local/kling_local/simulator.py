"""Local HTTP simulator of the WaveSpeed REST API (Kling V2.0 T2V + prompt optimizer)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

from .mp4 import MAX_VARIANT, VideoBlob

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

OPTIMIZER_SENTENCES = {
    "video": (
        "Cinematic composition with smooth, steady camera motion, natural lighting and rich,"
        " temporally coherent detail throughout the shot."
    ),
    "image": "Sharp focus, balanced composition, natural lighting and rich fine detail.",
}

COUNTERS = (
    "submit_requests",
    "tasks_created",
    "optimizer_requests",
    "result_requests",
    "downloads_started",
    "downloads_completed",
    "unauthorized",
)

_TERMINAL = ("completed", "failed", "cancelled", "timeout")
_STREAM_CHUNK = 256 * 1024
_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-\[\]:]+")
_RESULT_PATH = re.compile(r"/api/v3/predictions/([A-Za-z0-9_-]+)(?:/result)?")
_OUTPUT_PATH = re.compile(r"/outputs/([A-Za-z0-9_-]+)/(\d+)\.mp4")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


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
        for name in (
            "submit_429_rate",
            "poll_5xx_rate",
            "fail_rate",
            "cancel_rate",
            "cut_once_rate",
            "truncate_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.fail_rate + self.cancel_rate > 1.0:
            raise ValueError("fail_rate + cancel_rate must not exceed 1")
        for name in (
            "generation_seconds",
            "processing_after_seconds",
            "submit_latency_seconds",
            "poll_latency_seconds",
            "slow_submit_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.output_size is not None and self.output_size < VideoBlob.min_size():
            raise ValueError(f"output_size must be at least {VideoBlob.min_size()} bytes")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")


class _Blob(Protocol):
    size: int

    @property
    def sha256(self) -> str: ...

    def iter_bytes(self, start: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...


class _HtmlBlob:
    """An HTML error page of a given size: what a misbehaving CDN might serve as 'video'."""

    _HEAD = (
        b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        b"<body><h1>502 Bad Gateway</h1><p>The origin returned an invalid response.</p>\n"
    )
    _FILLER = b"<p>padding padding padding padding padding padding padding padding</p>\n"
    _TAIL = b"</body></html>\n"

    def __init__(self, size: int) -> None:
        self.size: int = size
        self._filler_len = max(0, size - len(self._HEAD) - len(self._TAIL))
        self._lock = threading.Lock()
        self._sha256: str | None = None

    def _read(self, start: int, end: int) -> bytes:
        head_end = len(self._HEAD)
        filler_end = head_end + self._filler_len
        parts: list[bytes] = []
        if start < head_end:
            parts.append(self._HEAD[start : min(end, head_end)])
        if end > head_end and start < filler_end:
            lo = max(start, head_end) - head_end
            hi = min(end, filler_end) - head_end
            pattern = self._FILLER
            first = lo % len(pattern)
            repeats = (first + hi - lo) // len(pattern) + 1
            parts.append((pattern * repeats)[first : first + hi - lo])
        if end > filler_end:
            parts.append(self._TAIL[max(start, filler_end) - filler_end : end - filler_end])
        return b"".join(parts)[: end - start]

    def iter_bytes(self, start: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        position = start
        while position < self.size:
            end = min(self.size, position + chunk_size)
            yield self._read(position, end)
            position = end

    @property
    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                digest = hashlib.sha256()
                for chunk in self.iter_bytes():
                    digest.update(chunk)
                self._sha256 = digest.hexdigest()
            return self._sha256


@dataclass
class _Task:
    id: str
    prompt: str
    params: dict[str, Any]
    created_at: str
    created_monotonic: float
    outcome: str
    error: str
    nsfw: bool
    output_count: int
    cut_once: bool
    truncate: bool
    not_mp4: bool
    poll_500_pending: bool
    blobs: dict[int, _Blob] = field(default_factory=dict)
    downloads: dict[int, int] = field(default_factory=dict)


@dataclass
class _Reply:
    """What the handler should do with a submit: answer, answer late, or hang up."""

    status: int
    payload: dict[str, Any] | None
    delay_seconds: float = 0.0
    drop: bool = False
    task: _Task | None = None
    sync: bool = False


def _envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def _error(code: int, message: str) -> _Reply:
    return _Reply(code, _envelope(None, code, message))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_object(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        body = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "request body must be valid JSON"
    if not isinstance(body, dict):
        return None, "request body must be a JSON object"
    return body, ""


def _validate_t2v(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Normalised input, or (None, message) mirroring the real API's 400 answers."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None, "prompt is required"
    negative = body.get("negative_prompt", "")
    if negative is None:
        negative = ""
    if not isinstance(negative, str):
        return None, "negative_prompt must be a string"
    aspect_ratio = body.get("aspect_ratio", "16:9")
    if aspect_ratio not in ASPECT_RATIOS:
        return None, f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}"
    duration = body.get("duration", 5)
    # bool is an int subclass; True must not pass as a duration.
    if isinstance(duration, str) and duration.strip().isdigit():
        duration = int(duration.strip())
    if isinstance(duration, bool) or duration not in DURATIONS:
        return None, "duration must be 5 or 10"
    guidance = body.get("guidance_scale", 0.5)
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, int | float)
        or not 0.0 <= guidance <= 1.0
    ):
        return None, "guidance_scale must be a number between 0 and 1"
    return {
        "prompt": prompt,
        "negative_prompt": negative,
        "aspect_ratio": aspect_ratio,
        "duration": int(duration),
        "guidance_scale": float(guidance),
    }, ""


class WaveSpeedSimulator:
    """A WaveSpeed-compatible HTTP server on a local port, with counters and fault injection."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.config.validate()
        self._lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        self._tasks: dict[str, _Task] = {}
        self._optimizer_tasks: dict[str, dict[str, Any]] = {}
        self._prompts_rejected_once: set[str] = set()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self, port: int | None = None) -> WaveSpeedSimulator:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        # Encode the shared video frames now, not inside the first download request.
        VideoBlob.min_size()
        bind_port = self.config.port if port is None else port
        server = _Server((self.config.host, bind_port), self)
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

    # ---------------------------------------------------------------- inspection

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def tasks(self) -> list[dict[str, Any]]:
        """Every paid task in creation order, with its status as of now."""
        now = time.monotonic()
        base = self.base_url if self._server is not None else self.config.public_base_url or ""
        with self._lock:
            return [
                {
                    "id": task.id,
                    "prompt": task.prompt,
                    "status": self._status(task, now),
                    "outputs": self._output_urls(task, base, now),
                    "created_at": task.created_at,
                    "input": dict(task.params),
                    "error": task.error if self._status(task, now) in _TERMINAL else "",
                }
                for task in self._tasks.values()
            ]

    def output_sha256(self, task_id: str, n: int = 0) -> str:
        """SHA-256 of output ``n`` of a task (KeyError/IndexError when it does not exist)."""
        return self._blob(task_id, n).sha256

    def output_size(self, task_id: str, n: int = 0) -> int:
        return self._blob(task_id, n).size

    # ---------------------------------------------------------------- internals

    def _count(self, counter: str, delta: int = 1) -> None:
        with self._lock:
            self._counters[counter] += delta

    def _wait(self, seconds: float) -> None:
        # Waiting on the stop event lets stop() release handlers stuck in a simulated delay.
        if seconds > 0:
            self._stopping.wait(seconds)

    def _status(self, task: _Task, now: float) -> str:
        elapsed = now - task.created_monotonic
        if elapsed >= self.config.generation_seconds:
            return task.outcome
        if elapsed >= self.config.processing_after_seconds:
            return "processing"
        return "created"

    def _output_urls(self, task: _Task, base: str, now: float) -> list[str]:
        if self._status(task, now) != "completed":
            return []
        return [f"{base}/outputs/{task.id}/{n}.mp4" for n in range(task.output_count)]

    def _blob(self, task_id: str, n: int) -> _Blob:
        with self._lock:
            task = self._tasks[task_id]
            if not 0 <= n < task.output_count:
                raise IndexError(f"task {task_id} has no output {n}")
            blob = task.blobs.get(n)
            if blob is None:
                size = self.config.output_size
                if task.not_mp4:
                    blob = _HtmlBlob(size if size is not None else VideoBlob.min_size())
                else:
                    variant = (int(task.id[:6], 16) + n) % MAX_VARIANT
                    blob = VideoBlob(size, variant=variant)
                task.blobs[n] = blob
            return blob

    def _task_data(self, task: _Task, base: str, *, as_created: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        # A submit answer always reports "created", however long it was held back.
        status = "created" if as_created else self._status(task, now)
        outputs = self._output_urls(task, base, now) if status == "completed" else []
        terminal = status in _TERMINAL
        elapsed_ms = int(self.config.generation_seconds * 1000) if terminal else 0
        return {
            "id": task.id,
            "model": MODEL,
            "outputs": outputs,
            "urls": {"get": f"{base}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [task.nsfw] * len(outputs),
            "status": status,
            "created_at": task.created_at,
            "error": task.error if terminal and status != "completed" else "",
            "executionTime": elapsed_ms,
            "timings": {"inference": elapsed_ms},
        }

    def _active_tasks(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self._tasks.values() if self._status(t, now) not in _TERMINAL)

    def _new_task(self, params: dict[str, Any]) -> _Task:
        """Create a (paid) task; random faults are decided here, once per task."""
        prompt: str = params["prompt"]
        cfg = self.config
        with self._lock:
            roll = self._rng.random() if cfg.fail_rate or cfg.cancel_rate else 1.0
            cut_once = bool(cfg.cut_once_rate) and self._rng.random() < cfg.cut_once_rate
            truncate = bool(cfg.truncate_rate) and self._rng.random() < cfg.truncate_rate
            outcome, error = "completed", ""
            if MARKER_FAIL in prompt:
                outcome, error = "failed", f"Simulated generation failure ({MARKER_FAIL})"
            elif MARKER_CANCEL in prompt:
                outcome, error = "cancelled", "Task was cancelled"
            elif MARKER_TIMEOUT in prompt:
                outcome, error = "timeout", "Task timed out before the generation finished"
            elif roll < cfg.fail_rate:
                outcome, error = "failed", "Simulated generation failure (random)"
            elif roll < cfg.fail_rate + cfg.cancel_rate:
                outcome, error = "cancelled", "Task was cancelled"
            task = _Task(
                id=uuid.uuid4().hex,
                prompt=prompt,
                params=params,
                created_at=_now_iso(),
                created_monotonic=time.monotonic(),
                outcome=outcome,
                error=error,
                nsfw=MARKER_NSFW in prompt,
                output_count=2 if MARKER_TWO_OUTPUTS in prompt else 1,
                cut_once=cut_once or MARKER_CUT_ONCE in prompt,
                truncate=truncate or MARKER_TRUNCATE in prompt,
                not_mp4=MARKER_NOT_MP4 in prompt,
                poll_500_pending=MARKER_POLL_500_ONCE in prompt,
            )
            self._tasks[task.id] = task
            self._counters["tasks_created"] += 1
            return task

    def _rejection(self, prompt: str) -> _Reply | None:
        """A submit answer that creates no task (marker or random fault), if any applies."""
        if MARKER_429_ONCE in prompt and prompt not in self._prompts_rejected_once:
            self._prompts_rejected_once.add(prompt)
            return _error(429, "Too many requests, please retry later")
        if MARKER_CODE_1001 in prompt:
            # The real API sometimes reports business errors inside an HTTP 200.
            return _Reply(200, _envelope(None, 1001, "Simulated business error (code 1001)"))
        if MARKER_500_SUBMIT in prompt:
            return _error(500, "Internal server error")
        rate = self.config.submit_429_rate
        if rate and self._rng.random() < rate:
            return _error(429, "Too many requests, please retry later")
        cap = self.config.max_concurrency
        if cap is not None and self._active_tasks() >= cap:
            return _error(429, f"Concurrency limit reached ({cap} tasks in progress)")
        return None

    def _submit(self, raw: bytes, base: str) -> _Reply:
        self._wait(self.config.submit_latency_seconds)
        body, message = _json_object(raw)
        if body is None:
            return _error(400, message)
        params, message = _validate_t2v(body)
        if params is None:
            return _error(400, message)
        prompt: str = params["prompt"]
        with self._lock:
            rejection = self._rejection(prompt)
            if rejection is not None:
                return rejection
            task = self._new_task(params)
        if MARKER_DROP_SUBMIT in prompt:
            return _Reply(0, None, drop=True, task=task)
        delay = self.config.slow_submit_seconds if MARKER_SLOW_SUBMIT in prompt else 0.0
        sync = body.get("enable_sync_mode") is True
        if sync:
            self._wait_terminal(task)
        return _Reply(200, None, delay_seconds=delay, task=task, sync=sync)

    def _wait_terminal(self, task: _Task) -> None:
        while not self._stopping.is_set() and self._status(task, time.monotonic()) not in _TERMINAL:
            self._stopping.wait(0.02)

    def _optimize(self, raw: bytes, base: str) -> _Reply:
        self._count("optimizer_requests")
        body, message = _json_object(raw)
        if body is None:
            return _error(400, message)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "text is required")
        mode = body.get("mode", "image")
        if mode not in OPTIMIZER_SENTENCES:
            return _error(400, "mode must be one of video, image")
        style = body.get("style")
        if style is not None and not isinstance(style, str):
            return _error(400, "style must be a string")
        if MARKER_OPTIMIZER_FAIL in text:
            return _error(500, "Internal server error")
        # The original text (markers included) is kept so simulator markers survive
        # optimisation and still reach the video submission.
        enhanced = f"{text.strip()} {OPTIMIZER_SENTENCES[mode]}"
        if style and style != "default":
            enhanced += f" Rendered in a {style} style."
        task_id = uuid.uuid4().hex
        data = {
            "id": task_id,
            "model": OPTIMIZER_MODEL,
            "outputs": [enhanced],
            "urls": {"get": f"{base}/api/v3/predictions/{task_id}/result"},
            "has_nsfw_contents": [False],
            "status": "completed",
            "created_at": _now_iso(),
            "error": "",
            "executionTime": 5,
            "timings": {"inference": 5},
        }
        with self._lock:
            self._optimizer_tasks[task_id] = data
        if body.get("enable_sync_mode") is True:
            return _Reply(200, _envelope(data))
        pending = dict(data, status="created", outputs=[], has_nsfw_contents=[])
        return _Reply(200, _envelope(pending))

    def _result(self, task_id: str, base: str) -> _Reply:
        self._count("result_requests")
        self._wait(self.config.poll_latency_seconds)
        with self._lock:
            optimizer = self._optimizer_tasks.get(task_id)
            task = self._tasks.get(task_id)
            if optimizer is None and task is None:
                return _error(404, f"prediction {task_id} not found")
            if task is not None and task.poll_500_pending:
                task.poll_500_pending = False
                return _error(500, "Internal server error")
            rate = self.config.poll_5xx_rate
            if rate and self._rng.random() < rate:
                code = self._rng.choice((500, 502, 503))
                return _error(code, "Upstream temporarily unavailable")
            if task is not None:
                return _Reply(200, _envelope(self._task_data(task, base)))
            return _Reply(200, _envelope(optimizer))

    def _start_download(self, task_id: str, n: int, *, head: bool) -> tuple[_Blob, bool] | None:
        """The blob to serve and whether this download must be cut short."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or not 0 <= n < task.output_count:
                return None
            if self._status(task, time.monotonic()) != "completed":
                return None
            if head:
                return self._blob(task_id, n), False
            previous = task.downloads.get(n, 0)
            task.downloads[n] = previous + 1
            self._counters["downloads_started"] += 1
            cut = task.truncate or (task.cut_once and previous == 0)
        return self._blob(task_id, n), cut


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Handlers may sit in simulated delays; stop() must not wait for them.
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: WaveSpeedSimulator) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, opened: bool) -> None:
        with self._connections_lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_open_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.sim.config.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WaveSpeedSimulator/1.0"
    # Idle keep-alive connections must not pin handler threads forever.
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, opened=False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.config.verbose:
            sys.stderr.write(f"[sim] {self.address_string()} {format % args}\n")

    # ---------------------------------------------------------------- helpers

    @property
    def sim(self) -> WaveSpeedSimulator:
        return self.server.sim

    def _public_base(self) -> str:
        configured = self.sim.config.public_base_url
        if configured:
            return configured.rstrip("/")
        host = self.headers.get("Host", "")
        if host and _HOST_HEADER.fullmatch(host):
            return f"http://{host}"
        return self.sim.base_url

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Not needed by any client here; closing avoids misreading the stream.
            self.close_connection = True
            return b""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.sim.config.api_key.encode()
        )

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _send_reply(self, reply: _Reply) -> None:
        if reply.payload is not None:
            self._send_json(reply.status, reply.payload)

    def _not_found(self) -> None:
        self._send_json(404, _envelope(None, 404, "Not Found"))

    # ---------------------------------------------------------------- routes

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        raw = self._read_body()
        if not path.startswith("/api/"):
            self._not_found()
            return
        if path == MODEL_PATH:
            self.sim._count("submit_requests")
        if not self._authorized():
            self.sim._count("unauthorized")
            self._send_json(401, _envelope(None, 401, "Unauthorized"))
            return
        base = self._public_base()
        if path == MODEL_PATH:
            self._handle_submit(raw, base)
        elif path == OPTIMIZER_PATH:
            self._send_reply(self.sim._optimize(raw, base))
        else:
            self._send_json(
                404, _envelope(None, 404, f"model not found: {path[len('/api/v3/') :]}")
            )

    def _handle_submit(self, raw: bytes, base: str) -> None:
        reply = self.sim._submit(raw, base)
        if reply.drop:
            # The task exists, but the client never learns its id.
            self.close_connection = True
            return
        if reply.task is not None:
            self.sim._wait(reply.delay_seconds)
            data = self.sim._task_data(reply.task, base, as_created=not reply.sync)
            reply.payload = _envelope(data)
        self._send_reply(reply)

    def do_GET(self) -> None:
        self._handle_get()

    def do_HEAD(self) -> None:
        self._handle_get()

    def _handle_get(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_sim/stats":
            self._send_json(200, self.sim.stats())
            return
        output = _OUTPUT_PATH.fullmatch(path)
        if output:
            self._download(output.group(1), int(output.group(2)))
            return
        if not path.startswith("/api/"):
            self._not_found()
            return
        if not self._authorized():
            self.sim._count("unauthorized")
            self._send_json(401, _envelope(None, 401, "Unauthorized"))
            return
        result = _RESULT_PATH.fullmatch(path.rstrip("/"))
        if result is None:
            self._not_found()
            return
        self._send_reply(self.sim._result(result.group(1), self._public_base()))

    def _byte_range(self, size: int) -> tuple[int, int] | None | bool:
        """(start, end inclusive) for a satisfiable Range, None for no/ignored Range,
        False for an unsatisfiable one."""
        header = self.headers.get("Range")
        if not header:
            return None
        match = _RANGE.fullmatch(header.strip())
        if match is None or match.group(1) == match.group(2) == "":
            # Multi-range and malformed headers may be ignored (RFC 9110 section 14.2).
            return None
        first, last = match.group(1), match.group(2)
        if first == "":
            suffix = int(last)
            if suffix == 0:
                return False
            return max(0, size - suffix), size - 1
        start = int(first)
        end = size - 1 if last == "" else min(int(last), size - 1)
        if start >= size or end < start:
            return False
        return start, end

    def _download(self, task_id: str, n: int) -> None:
        head_only = self.command == "HEAD"
        started = self.sim._start_download(task_id, n, head=head_only)
        if started is None:
            self._not_found()
            return
        blob, cut = started
        byte_range = self._byte_range(blob.size)
        if byte_range is False:
            try:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{blob.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                self.close_connection = True
            return
        start, end = byte_range if isinstance(byte_range, tuple) else (0, blob.size - 1)
        length = end - start + 1
        try:
            self.send_response(206 if isinstance(byte_range, tuple) else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if isinstance(byte_range, tuple):
                self.send_header("Content-Range", f"bytes {start}-{end}/{blob.size}")
            self.end_headers()
            if head_only:
                return
            self._stream(blob, start, length // 2 if cut else length, complete=not cut)
        except OSError:
            self.close_connection = True
            return
        if cut:
            # Content-Length promised more than was sent: hang up so the client sees the cut.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, blob: _Blob, start: int, count: int, *, complete: bool) -> None:
        remaining = count
        counted = False
        try:
            for chunk in blob.iter_bytes(start, _STREAM_CHUNK):
                if remaining <= 0:
                    break
                piece = chunk[:remaining]
                remaining -= len(piece)
                if complete and remaining == 0:
                    # Counted before the last write: a client holding every byte must already
                    # see the completion in /_sim/stats.
                    self.sim._count("downloads_completed")
                    counted = True
                self.wfile.write(piece)
        except OSError:
            if counted:
                self.sim._count("downloads_completed", -1)
            raise


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kling_local.simulator",
        description="Run a local WaveSpeed API simulator until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=SimulatorConfig.api_key)
    parser.add_argument(
        "--generation-seconds", type=float, default=SimulatorConfig.generation_seconds
    )
    parser.add_argument(
        "--output-size",
        type=int,
        default=None,
        help="bytes of each output MP4 (default: the small sample video)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--submit-429-rate", type=float, default=0.0)
    parser.add_argument("--poll-5xx-rate", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--public-base-url", default=None)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    config = SimulatorConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        generation_seconds=args.generation_seconds,
        output_size=args.output_size,
        seed=args.seed,
        submit_429_rate=args.submit_429_rate,
        poll_5xx_rate=args.poll_5xx_rate,
        fail_rate=args.fail_rate,
        max_concurrency=args.max_concurrency,
        public_base_url=args.public_base_url,
        verbose=args.verbose,
    )
    sim = WaveSpeedSimulator(config).start()
    print(
        f"WaveSpeed simulator listening on {sim.base_url} (api key: {config.api_key})", flush=True
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
