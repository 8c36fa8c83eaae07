"""The HTTP layer: routes api.wavespeed.ai's paths onto the simulator's public operations."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .config import MODEL_PATH, OPTIMIZER_PATH
from .downloads import Download
from .wire import Reply, envelope, error, json_object

if TYPE_CHECKING:
    from .core import WaveSpeedSimulator

_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-\[\]:]+")
# WaveSpeed's docs poll both /predictions/{id}/result and /predictions/{id}: serve both.
_RESULT_PATH = re.compile(r"/api/v3/predictions/([A-Za-z0-9_-]+)(?:/result)?")
# Output URLs as WaveSpeed's CDNs shape them: /predictions/<id>/<k>.mp4 (k from 1) and
# /output/<id>.mp4 (further outputs /output/<id>-<k>.mp4).
_OUTPUT_PATHS = (
    re.compile(r"/predictions/(?P<id>[0-9a-f]{32})/(?P<k>[1-9]\d*)\.mp4"),
    re.compile(r"/output/(?P<id>[0-9a-f]{32})(?:-(?P<k>[2-9]|[1-9]\d+))?\.mp4"),
)
HISTORY_PATH = "/api/v3/predictions"
BALANCE_PATHS = ("/api/v3/balance", "/api/v3/account/balance")
WEBHOOK_SECRET_PATH = "/api/v3/webhook/secret"


class SimulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that can cut its open connections when stopped."""

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
    server: SimulatorServer

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

    def _send_reply(self, reply: Reply) -> None:
        if reply.payload is not None:
            self._send_json(reply.status, reply.payload)

    def _not_found(self) -> None:
        self._send_json(404, envelope(None, 404, "Not Found"))

    def _refuse_unauthorized(self) -> bool:
        refusal = self.sim.api.auth_refusal(self.headers.get("Authorization", ""))
        if refusal is None:
            return False
        self._send_reply(refusal)
        return True

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        raw = self._read_body()
        if not path.startswith("/api/"):
            self._not_found()
            return
        if path == MODEL_PATH:
            self.sim.api.count("submit_requests")
        if self._refuse_unauthorized():
            return
        base = self._public_base()
        if path == MODEL_PATH:
            self._handle_submit(raw, base)
        elif path == OPTIMIZER_PATH:
            self._send_reply(self.sim.api.optimize(raw, base))
        elif path == HISTORY_PATH:
            body, message = json_object(raw)
            reply = error(400, message) if body is None else None
            self._send_reply(reply or self.sim.api.history(body or {}, base, defaults=False))
        else:
            model = path[len("/api/v3/") :]
            self._send_json(404, envelope(None, 404, f"model not found: {model}"))

    def _handle_submit(self, raw: bytes, base: str) -> None:
        reply = self.sim.api.submit(raw)
        if reply.drop:
            # The task exists, but the client never learns its id.
            self.close_connection = True
            return
        if reply.task is not None:
            self.sim.api.wait(reply.delay_seconds)
            reply.payload = self.sim.api.submitted(reply, base)
        self._send_reply(reply)

    def do_GET(self) -> None:
        self._handle_get()

    def do_HEAD(self) -> None:
        self._handle_get()

    def _handle_get(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        if path == "/_sim/stats":
            self._send_json(200, self.sim.stats())
            return
        for pattern in _OUTPUT_PATHS:
            output = pattern.fullmatch(path)
            if output:
                self._download(output.group("id"), int(output.group("k") or 1) - 1)
                return
        if not path.startswith("/api/"):
            self._not_found()
            return
        if self._refuse_unauthorized():
            return
        self._send_reply(self._api_get(path, parts.query))

    def _api_get(self, path: str, query: str) -> Reply:
        api = self.sim.api
        if path == HISTORY_PATH:
            params = {key: values[-1] for key, values in parse_qs(query).items()}
            return api.history(params, self._public_base(), defaults=True)
        if path in BALANCE_PATHS:
            return api.balance()
        if path == WEBHOOK_SECRET_PATH:
            return api.webhook_secret()
        result = _RESULT_PATH.fullmatch(path)
        if result is None:
            return error(404, "Not Found")
        return api.result(result.group(1), self._public_base())

    def _download(self, task_id: str, n: int) -> None:
        started = self.sim.api.start_download(task_id, n, head=self.command == "HEAD")
        if started is None:
            self._not_found()
            return
        blob, cut = started
        download = Download(
            self,
            blob,
            cut=cut,
            count_completed=lambda d: self.sim.api.count("downloads_completed", d),
        )
        try:
            download.send()
        except OSError:
            self.close_connection = True
