"""Serving an output file: byte ranges, HEAD, and the cut-short downloads of a flaky CDN."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from .blobs import Blob

STREAM_CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(start, end inclusive) for a satisfiable Range, None for no/ignored Range,
    False for an unsatisfiable one."""
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


class Download:
    """One answer to a GET/HEAD of an output URL, written to a request handler."""

    def __init__(
        self,
        handler: BaseHTTPRequestHandler,
        blob: Blob,
        *,
        cut: bool,
        count_completed: Callable[[int], None],
    ) -> None:
        self._handler = handler
        self._blob = blob
        self._cut = cut
        self._count_completed = count_completed

    def send(self) -> None:
        """Answer the request; OSError when the client went away mid-answer."""
        handler, blob = self._handler, self._blob
        head_only = handler.command == "HEAD"
        chosen = byte_range(handler.headers.get("Range"), blob.size)
        if chosen is False:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{blob.size}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start, end = chosen if isinstance(chosen, tuple) else (0, blob.size - 1)
        length = end - start + 1
        handler.send_response(206 if isinstance(chosen, tuple) else 200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(length))
        handler.send_header("Accept-Ranges", "bytes")
        if isinstance(chosen, tuple):
            handler.send_header("Content-Range", f"bytes {start}-{end}/{blob.size}")
        handler.end_headers()
        if head_only:
            return
        self._stream(start, length // 2 if self._cut else length)
        if self._cut:
            # Content-Length promised more than was sent: hang up so the client sees the cut.
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, start: int, count: int) -> None:
        remaining = count
        counted = False
        try:
            for chunk in self._blob.iter_bytes(start, STREAM_CHUNK):
                if remaining <= 0:
                    break
                piece = chunk[:remaining]
                remaining -= len(piece)
                if not self._cut and remaining == 0:
                    # Counted before the last write: a client holding every byte must already
                    # see the completion in /_sim/stats.
                    self._count_completed(1)
                    counted = True
                self._handler.wfile.write(piece)
        except OSError:
            if counted:
                self._count_completed(-1)
            raise
