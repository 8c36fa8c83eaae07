"""Lambda function URLs on 127.0.0.1: each HTTP request becomes a payload-format-2.0 event."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

#: Runs a function by name: (payload JSON, errored, logs), as `FunctionHost.invoke` returns.
Invoke = Callable[[str, dict[str, Any]], tuple[str, bool, str]]
#: Lambda's own bound on a synchronous request payload.
MAX_REQUEST_BYTES = 6 * 1024 * 1024


def function_url_event(
    method: str, target: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """The event a function URL hands its function: lower-case headers, the body as text when
    it is UTF-8, base64 otherwise."""
    parts = urlsplit(target)
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": {name.lower(): value for name, value in headers.items()},
        "requestContext": {
            "accountId": "anonymous",
            "domainName": headers.get("Host", "127.0.0.1"),
            "http": {
                "method": method,
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": f"local-{now:.6f}",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(now * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class FunctionUrlServer:
    """Serves one function at `http://127.0.0.1:<port>/`, answering with what it returns
    (`statusCode`, `headers`, `body`), or 502 when it raised, as Lambda would."""

    def __init__(self, function_name: str, invoke: Invoke, host: str = "127.0.0.1") -> None:
        self.function_name = function_name
        self._invoke = invoke
        self._host = host
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"url-{function_name}", daemon=True
        )

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://{self._host}:{port}/"

    def start(self) -> FunctionUrlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                self._answer()

            def do_GET(self) -> None:  # noqa: N802
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REQUEST_BYTES:
                    self._send(413, {}, b'{"message":"Request Entity Too Large"}')
                    return
                body = self.rfile.read(length) if length else b""
                event = function_url_event(self.command, self.path, dict(self.headers), body)
                payload, errored, _ = server._invoke(server.function_name, event)
                if errored:
                    self._send(502, {}, b'{"message":"Internal Server Error"}')
                    return
                self._send(*_response(json.loads(payload)))

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "content-type" not in {name.lower() for name in headers}:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # one line per webhook would drown the runner's progress lines

        return Handler


def _response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Lambda's rule for function URL answers: a dict with `statusCode` is a response, any
    other value is a 200 with that value as its JSON body."""
    if isinstance(result, dict) and "statusCode" in result:
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        return int(result["statusCode"]), headers, data
    return 200, {}, json.dumps(result).encode()
