"""Deterministic MP4 blobs of any requested size, readable at random offsets without being built."""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache

from .clip import DEFAULT_SECONDS, encode_clip
from .container import mp4_file
from .pictures import VARIANT_BITS

# Variants are drawn as a 24-bit code and folded into 32-bit creation times.
MAX_VARIANT = 1 << VARIANT_BITS

# ISO-BMFF counts seconds from 1904-01-01; a fixed date keeps every output byte-for-byte stable.
_EPOCH_1904 = datetime(1904, 1, 1, tzinfo=UTC)
_BASE_CREATION_TIME = int((datetime(2025, 1, 1, tzinfo=UTC) - _EPOCH_1904).total_seconds())
_PAD_SEGMENT = 1 << 16
_U32_MAX = 0xFFFFFFFF


@lru_cache(maxsize=32)
def _build_mp4(variant: int, mdat_extra: int, seconds: int) -> bytes:
    return mp4_file(encode_clip(variant, seconds), _BASE_CREATION_TIME + variant, mdat_extra)


def sample_video(seconds: int = DEFAULT_SECONDS) -> bytes:
    """The smallest video of variant 0: H.264 160x96 at 12 fps lasting ``seconds``."""
    return _build_mp4(0, 0, seconds)


@lru_cache(maxsize=16)
def _padding_template(variant: int) -> bytes:
    seed = f"kling-local padding {variant}".encode()
    return b"".join(
        hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        for counter in range(_PAD_SEGMENT // 32)
    )


def _padding(variant: int, offset: int, length: int) -> bytes:
    """Deterministic filler; every 64 KiB segment starts with its index so misplaced or
    repeated chunks change the digest (all-zero filler would hide such download bugs)."""
    template = _padding_template(variant)
    out = bytearray()
    segment, within = divmod(offset, _PAD_SEGMENT)
    while len(out) < length:
        block = bytearray(template)
        block[0:8] = segment.to_bytes(8, "big")
        out += block[within : within + length - len(out)]
        segment += 1
        within = 0
    return bytes(out)


class GeneratedBytes:
    """Bytes made on demand from ``read``: streamed in chunks, their SHA-256 computed once."""

    def __init__(self, size: int) -> None:
        self.size: int = size
        self._lock = threading.Lock()
        self._sha256: str | None = None

    def read(self, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)``, clipped to the end."""
        raise NotImplementedError

    def iter_bytes(self, start: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes from ``start`` to the end in chunks of at most ``chunk_size``."""
        if not 0 <= start <= self.size:
            raise ValueError(f"start {start} outside [0, {self.size}]")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        position = start
        while position < self.size:
            chunk = self.read(position, chunk_size)
            position += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the whole content (streamed once, then cached)."""
        with self._lock:
            if self._sha256 is None:
                digest = hashlib.sha256()
                for chunk in self.iter_bytes():
                    digest.update(chunk)
                self._sha256 = digest.hexdigest()
            return self._sha256


class VideoBlob(GeneratedBytes):
    """A deterministic valid MP4 of exactly ``size`` bytes, produced on demand in chunks.

    The clip of ``variant`` (its own colours, bit code and creation time) is grown with a
    trailing ``free`` box (or, for gaps under 8 bytes, with unreferenced bytes at the end of
    ``mdat``), so sample offsets never move and multi-GB files are never materialised in
    memory. The clip's size depends on ``seconds`` only, never on ``variant``, so every
    variant can be served at every size from :meth:`min_size` up.
    """

    def __init__(
        self, size: int | None = None, *, variant: int = 0, seconds: int = DEFAULT_SECONDS
    ) -> None:
        if not 0 <= variant < MAX_VARIANT:
            raise ValueError(f"variant must be in [0, {MAX_VARIANT})")
        base = _build_mp4(variant, 0, seconds)
        target = len(base) if size is None else size
        pad = target - len(base)
        if pad < 0:
            raise ValueError(f"size {target} is below the minimum MP4 size {len(base)}")
        if pad == 0:
            prefix = base
        elif pad < 8:
            prefix = _build_mp4(variant, pad, seconds)
        elif pad <= _U32_MAX:
            prefix = base + struct.pack(">I4s", pad, b"free")
        else:
            prefix = base + struct.pack(">I4sQ", 1, b"free", pad)
        super().__init__(target)
        self.variant: int = variant
        self.seconds: int = seconds
        self._prefix = prefix

    @classmethod
    def min_size(cls, seconds: int = DEFAULT_SECONDS) -> int:
        """Smallest size a VideoBlob of ``seconds`` can have (the same for every variant)."""
        return len(sample_video(seconds))

    def read(self, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)``, clipped to the blob's end."""
        if start < 0 or length < 0:
            raise ValueError("start and length must be non-negative")
        end = min(self.size, start + length)
        if start >= end:
            return b""
        prefix_len = len(self._prefix)
        head = self._prefix[start:end] if start < prefix_len else b""
        if end <= prefix_len:
            return head
        pad_start = max(start, prefix_len) - prefix_len
        return head + _padding(self.variant, pad_start, end - prefix_len - pad_start)

    def __repr__(self) -> str:
        return f"VideoBlob(size={self.size}, variant={self.variant}, seconds={self.seconds})"


def parse_boxes(data: bytes) -> list[tuple[str, int]]:
    """Top-level ISO-BMFF boxes as (type, declared size).

    Boxes whose header lies inside ``data`` are listed even when their body extends past the
    end, so a file prefix can be inspected. Raises ValueError on an impossible box size.
    """
    boxes: list[tuple[str, int]] = []
    position = 0
    while position + 8 <= len(data):
        size, raw_kind = struct.unpack_from(">I4s", data, position)
        kind = raw_kind.decode("latin-1")
        header = 8
        if size == 1:
            if position + 16 > len(data):
                break
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = len(data) - position
        if size < header:
            raise ValueError(f"box {kind!r} at offset {position} has invalid size {size}")
        boxes.append((kind, size))
        position += size
    return boxes
