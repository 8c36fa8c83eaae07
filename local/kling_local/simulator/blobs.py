"""The bytes behind an output URL: a real MP4, or an HTML error page posing as one."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Protocol

from ..mp4 import MAX_VARIANT, VideoBlob


class Blob(Protocol):
    """What the download route needs from an output: a size, a digest and its bytes."""

    size: int

    @property
    def sha256(self) -> str: ...

    def iter_bytes(self, start: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...


class HtmlBlob:
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


def make_blob(task_id: str, n: int, size: int | None, *, not_mp4: bool) -> Blob:
    """Output `n` of a task: an MP4 whose frames differ per task and output, or an HTML page."""
    if not_mp4:
        return HtmlBlob(size if size is not None else VideoBlob.min_size())
    variant = (int(task_id[:6], 16) + n) % MAX_VARIANT
    return VideoBlob(size, variant=variant)
