"""The bytes behind an output URL: a real MP4, or an HTML error page posing as one."""

from __future__ import annotations

from ..mp4 import MAX_VARIANT, VideoBlob
from ..mp4.blob import GeneratedBytes

#: What the download route needs from an output: a size, a digest and its bytes.
Blob = GeneratedBytes


class HtmlBlob(GeneratedBytes):
    """An HTML error page of a given size: what a misbehaving CDN might serve as 'video'."""

    _HEAD = (
        b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        b"<body><h1>502 Bad Gateway</h1><p>The origin returned an invalid response.</p>\n"
    )
    _FILLER = b"<p>padding padding padding padding padding padding padding padding</p>\n"
    _TAIL = b"</body></html>\n"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._filler_len = max(0, size - len(self._HEAD) - len(self._TAIL))

    def read(self, start: int, length: int) -> bytes:
        end = min(self.size, start + length)
        if start >= end:
            return b""
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


def make_blob(task_id: str, n: int, size: int | None, *, not_mp4: bool) -> Blob:
    """Output `n` of a task: an MP4 whose frames differ per task and output, or an HTML page."""
    if not_mp4:
        return HtmlBlob(size if size is not None else VideoBlob.min_size())
    variant = (int(task_id[:6], 16) + n) % MAX_VARIANT
    return VideoBlob(size, variant=variant)
