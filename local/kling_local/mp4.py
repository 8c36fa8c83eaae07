"""Pure-Python generator of small, decodable MP4 files (Motion-JPEG in ISO-BMFF) for local tests."""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache

WIDTH = 128
HEIGHT = 72
FPS = 12
FRAME_COUNT = 12
JPEG_QUALITY = 85
MEDIA_TIMESCALE = FPS * 1000
MOVIE_TIMESCALE = 1000
# Variants are folded into 32-bit creation times, so they must stay well below 2**32 - epoch.
MAX_VARIANT = 1 << 24

# ISO-BMFF counts seconds from 1904-01-01; a fixed date keeps every output byte-for-byte stable.
_EPOCH_1904 = datetime(1904, 1, 1, tzinfo=UTC)
_BASE_CREATION_TIME = int((datetime(2025, 1, 1, tzinfo=UTC) - _EPOCH_1904).total_seconds())
_PAD_SEGMENT = 1 << 16
_U32_MAX = 0xFFFFFFFF

# --------------------------------------------------------------------------------------------
# Baseline JPEG encoder (ITU T.81, Annex K tables), enough for synthetic frames.
# --------------------------------------------------------------------------------------------

_LUMA_QUANT = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_QUANT = (
    (17, 18, 24, 47, 99, 99, 99, 99,
     18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99,
     47, 66, 99, 99, 99, 99, 99, 99)
    + (99,) * 32
)  # fmt: skip

_DC_LUMA_BITS = bytes((0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0))
_DC_CHROMA_BITS = bytes((0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0))
_DC_VALUES = bytes(range(12))
_AC_LUMA_BITS = bytes((0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D))
_AC_LUMA_VALUES = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
    "2433627282090a161718191a25262728292a3435363738393a43444546474849"
    "4a535455565758595a636465666768696a737475767778797a83848586878889"
    "8a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5"
    "c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
    "f9fa"
)
_AC_CHROMA_BITS = bytes((0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77))
_AC_CHROMA_VALUES = bytes.fromhex(
    "000102031104052131061241510761711322328108144291a1b1c109233352f0"
    "156272d10a162434e125f11718191a262728292a35363738393a434445464748"
    "494a535455565758595a636465666768696a737475767778797a828384858687"
    "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3"
    "c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8"
    "f9fa"
)


def _zigzag_order() -> tuple[int, ...]:
    order: list[int] = []
    for diagonal in range(15):
        rows = range(max(0, diagonal - 7), min(diagonal, 7) + 1)
        # Even diagonals run bottom-left to top-right, odd ones the other way.
        for row in reversed(rows) if diagonal % 2 == 0 else rows:
            order.append(row * 8 + (diagonal - row))
    return tuple(order)


_ZIGZAG = _zigzag_order()
_DCT_MATRIX = tuple(
    tuple(
        (math.sqrt(0.125) if u == 0 else 0.5) * math.cos((2 * x + 1) * u * math.pi / 16)
        for x in range(8)
    )
    for u in range(8)
)


def _scaled_quant(table: Sequence[int], quality: int) -> tuple[int, ...]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (value * scale + 50) // 100)) for value in table)


_QUANT_TABLES = (
    _scaled_quant(_LUMA_QUANT, JPEG_QUALITY),
    _scaled_quant(_CHROMA_QUANT, JPEG_QUALITY),
)


def _huffman_codes(bits: bytes, values: bytes) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    index = 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[values[index]] = (code, length)
            code += 1
            index += 1
        code <<= 1
    return codes


_DC_CODES = (
    _huffman_codes(_DC_LUMA_BITS, _DC_VALUES),
    _huffman_codes(_DC_CHROMA_BITS, _DC_VALUES),
)
_AC_CODES = (
    _huffman_codes(_AC_LUMA_BITS, _AC_LUMA_VALUES),
    _huffman_codes(_AC_CHROMA_BITS, _AC_CHROMA_VALUES),
)


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._bits = 0

    def write(self, code: int, length: int) -> None:
        self._acc = (self._acc << length) | code
        self._bits += length
        while self._bits >= 8:
            self._bits -= 8
            byte = (self._acc >> self._bits) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                # Byte stuffing: a literal 0xFF in entropy data must not read as a marker.
                self.out.append(0)
        self._acc &= (1 << self._bits) - 1

    def flush(self) -> None:
        if self._bits:
            pad = 8 - self._bits
            self.write((1 << pad) - 1, pad)


@lru_cache(maxsize=8192)
def _quantized_dct(block: tuple[int, ...], table: int) -> tuple[int, ...]:
    """Forward DCT + quantisation of one level-shifted 8x8 block, in zigzag order."""
    matrix = _DCT_MATRIX
    quant = _QUANT_TABLES[table]
    rows = [
        [sum(m * v for m, v in zip(matrix[u], block[y * 8 : y * 8 + 8], strict=True))
         for u in range(8)]
        for y in range(8)
    ]  # fmt: skip
    natural = [0] * 64
    for v in range(8):
        column_weights = matrix[v]
        for u in range(8):
            total = sum(column_weights[y] * rows[y][u] for y in range(8))
            natural[v * 8 + u] = math.floor(total / quant[v * 8 + u] + 0.5)
    return tuple(natural[index] for index in _ZIGZAG)


def _magnitude_bits(value: int) -> tuple[int, int]:
    size = abs(value).bit_length()
    return (value if value >= 0 else value + (1 << size) - 1), size


def _encode_block(
    writer: _BitWriter, coefficients: tuple[int, ...], previous_dc: int, table: int
) -> int:
    dc_codes = _DC_CODES[table]
    ac_codes = _AC_CODES[table]
    bits, size = _magnitude_bits(coefficients[0] - previous_dc)
    writer.write(*dc_codes[size])
    if size:
        writer.write(bits, size)
    run = 0
    for value in coefficients[1:]:
        if value == 0:
            run += 1
            continue
        while run > 15:
            writer.write(*ac_codes[0xF0])
            run -= 16
        bits, size = _magnitude_bits(value)
        writer.write(*ac_codes[(run << 4) | size])
        writer.write(bits, size)
        run = 0
    if run:
        writer.write(*ac_codes[0x00])
    return coefficients[0]


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _jpeg_headers(width: int, height: int) -> bytes:
    jfif = b"JFIF\x00" + struct.pack(">BBBHHBB", 1, 1, 0, 1, 1, 0, 0)
    dqt = b"".join(
        bytes((index,)) + bytes(table[z] for z in _ZIGZAG)
        for index, table in enumerate(_QUANT_TABLES)
    )
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes((1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1))
    dht = b"".join(
        bytes((table_class_id,)) + bits + values
        for table_class_id, bits, values in (
            (0x00, _DC_LUMA_BITS, _DC_VALUES),
            (0x10, _AC_LUMA_BITS, _AC_LUMA_VALUES),
            (0x01, _DC_CHROMA_BITS, _DC_VALUES),
            (0x11, _AC_CHROMA_BITS, _AC_CHROMA_VALUES),
        )
    )
    sos = bytes((3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0))
    return (
        b"\xff\xd8"
        + _segment(0xE0, jfif)
        + _segment(0xDB, dqt)
        + _segment(0xC0, sof)
        + _segment(0xC4, dht)
        + _segment(0xDA, sos)
    )


def encode_jpeg(planes: Sequence[Sequence[int]], width: int, height: int) -> bytes:
    """Encode full-resolution (4:4:4) Y, Cb, Cr planes of 0..255 values as a baseline JPEG.

    Width and height must be multiples of 8 so that no edge padding is needed.
    """
    if width % 8 or height % 8:
        raise ValueError("width and height must be multiples of 8")
    writer = _BitWriter()
    previous_dc = [0, 0, 0]
    for block_y in range(0, height, 8):
        for block_x in range(0, width, 8):
            for component, plane in enumerate(planes):
                block = tuple(
                    plane[(block_y + y) * width + block_x + x] - 128
                    for y in range(8)
                    for x in range(8)
                )
                table = 0 if component == 0 else 1
                previous_dc[component] = _encode_block(
                    writer, _quantized_dct(block, table), previous_dc[component], table
                )
    writer.flush()
    return _jpeg_headers(width, height) + bytes(writer.out) + b"\xff\xd9"


def _frame_planes(frame: int) -> tuple[list[int], list[int], list[int]]:
    """A scrolling colour gradient with a white square moving across: visibly animated."""
    y_plane: list[int] = []
    cb_plane: list[int] = []
    cr_plane: list[int] = []
    square_x = 8 + frame * 8
    for y in range(HEIGHT):
        shade = 0.55 + 0.45 * y / HEIGHT
        for x in range(WIDTH):
            if square_x <= x < square_x + 16 and 20 <= y < 44:
                red = green = blue = 240.0
            else:
                phase = 2 * math.pi * (x + frame * 8) / WIDTH
                red = shade * (128 + 100 * math.sin(phase))
                green = shade * (128 + 100 * math.sin(phase + 2 * math.pi / 3))
                blue = shade * (128 + 100 * math.sin(phase + 4 * math.pi / 3))
            luma = 0.299 * red + 0.587 * green + 0.114 * blue
            y_plane.append(_clamp_byte(luma))
            cb_plane.append(_clamp_byte(128 + 0.564 * (blue - luma)))
            cr_plane.append(_clamp_byte(128 + 0.713 * (red - luma)))
    return y_plane, cb_plane, cr_plane


def _clamp_byte(value: float) -> int:
    return min(255, max(0, math.floor(value + 0.5)))


@lru_cache(maxsize=1)
def video_frames() -> tuple[bytes, ...]:
    """The JPEG frames shared by every generated MP4 (encoded once per process)."""
    return tuple(encode_jpeg(_frame_planes(i), WIDTH, HEIGHT) for i in range(FRAME_COUNT))


# --------------------------------------------------------------------------------------------
# ISO-BMFF writer
# --------------------------------------------------------------------------------------------

_IDENTITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _descriptor(tag: int, payload: bytes) -> bytes:
    # Single-byte lengths suffice: every descriptor written here is shorter than 128 bytes.
    return bytes((tag, len(payload))) + payload


def _sample_entry(frames: Sequence[bytes]) -> bytes:
    max_frame = max(len(frame) for frame in frames)
    avg_bitrate = sum(len(frame) for frame in frames) * 8 * FPS // len(frames)
    decoder_config = _descriptor(
        0x04,
        # objectTypeIndication 0x6C = ISO 10918-1 (JPEG); streamType 4 (visual) << 2 | 1.
        struct.pack(">BB", 0x6C, 0x11)
        + max_frame.to_bytes(3, "big")
        + struct.pack(">II", max_frame * 8 * FPS, avg_bitrate),
    )
    es_descriptor = _descriptor(
        0x03, struct.pack(">HB", 1, 0) + decoder_config + _descriptor(0x06, b"\x02")
    )
    compressor = b"\x11kling-local mjpeg".ljust(32, b"\x00")
    return _box(
        b"mp4v",
        b"\x00" * 6,
        struct.pack(">H", 1),
        b"\x00" * 16,
        struct.pack(">HHIII", WIDTH, HEIGHT, 0x00480000, 0x00480000, 0),
        struct.pack(">H", 1),
        compressor,
        struct.pack(">Hh", 0x0018, -1),
        _full_box(b"esds", 0, 0, es_descriptor),
    )


def _moov(frames: Sequence[bytes], first_offset: int, creation_time: int) -> bytes:
    count = len(frames)
    movie_duration = count * MOVIE_TIMESCALE // FPS
    media_duration = count * MEDIA_TIMESCALE // FPS
    offsets: list[int] = []
    position = first_offset
    for frame in frames:
        offsets.append(position)
        position += len(frame)
    mvhd = _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIIIIH", creation_time, creation_time, MOVIE_TIMESCALE, movie_duration,
                    0x00010000, 0x0100),
        b"\x00" * 10,
        _IDENTITY_MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),
    )  # fmt: skip
    tkhd = _full_box(
        b"tkhd", 0, 0x000003,
        struct.pack(">IIIII", creation_time, creation_time, 1, 0, movie_duration),
        b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0, 0),
        _IDENTITY_MATRIX,
        struct.pack(">II", WIDTH << 16, HEIGHT << 16),
    )  # fmt: skip
    mdhd = _full_box(
        b"mdhd", 0, 0,
        struct.pack(">IIIIHH", creation_time, creation_time, MEDIA_TIMESCALE, media_duration,
                    0x55C4, 0),  # 0x55C4 = ISO-639 "und" packed as 3x5 bits.
    )  # fmt: skip
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(frames)),
        _full_box(b"stts", 0, 0, struct.pack(">III", 1, count, MEDIA_TIMESCALE // FPS)),
        # One sample per chunk keeps every stco entry pointing at a frame start.
        _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, 1, 1)),
        _full_box(
            b"stsz", 0, 0, struct.pack(f">II{count}I", 0, count, *(len(frame) for frame in frames))
        ),
        _full_box(b"stco", 0, 0, struct.pack(f">I{count}I", count, *offsets)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


_FTYP = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso2", b"mp41")


@lru_cache(maxsize=64)
def _build_mp4(variant: int, mdat_extra: int) -> bytes:
    """ftyp + moov + mdat; ``mdat_extra`` zero bytes trail the frames inside mdat."""
    frames = video_frames()
    creation_time = _BASE_CREATION_TIME + variant
    # moov's size does not depend on the offset values, so a dry run tells where mdat starts.
    moov_size = len(_moov(frames, 0, creation_time))
    mdat_payload = sum(len(frame) for frame in frames) + mdat_extra
    first_offset = len(_FTYP) + moov_size + 8
    moov = _moov(frames, first_offset, creation_time)
    mdat_header = struct.pack(">I4s", 8 + mdat_payload, b"mdat")
    return _FTYP + moov + mdat_header + b"".join(frames) + b"\x00" * mdat_extra


def sample_video() -> bytes:
    """A small deterministic MP4 (1 s, 12 fps, 128x72 Motion-JPEG)."""
    return _build_mp4(0, 0)


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


class VideoBlob:
    """A deterministic valid MP4 of exactly ``size`` bytes, produced on demand in chunks.

    The sample video is grown with a trailing ``free`` box (or, for gaps under 8 bytes, with
    unreferenced bytes at the end of ``mdat``), so sample offsets never move and multi-GB
    files are never materialised in memory. ``variant`` changes the bytes (creation time and
    filler) but not the size, so different tasks get distinguishable outputs.
    """

    def __init__(self, size: int | None = None, *, variant: int = 0) -> None:
        if not 0 <= variant < MAX_VARIANT:
            raise ValueError(f"variant must be in [0, {MAX_VARIANT})")
        base = _build_mp4(variant, 0)
        target = len(base) if size is None else size
        pad = target - len(base)
        if pad < 0:
            raise ValueError(f"size {target} is below the minimum MP4 size {len(base)}")
        if pad == 0:
            prefix = base
        elif pad < 8:
            prefix = _build_mp4(variant, pad)
        elif pad <= _U32_MAX:
            prefix = base + struct.pack(">I4s", pad, b"free")
        else:
            prefix = base + struct.pack(">I4sQ", 1, b"free", pad)
        self.size: int = target
        self.variant: int = variant
        self._prefix = prefix
        self._lock = threading.Lock()
        self._sha256: str | None = None

    @classmethod
    def min_size(cls) -> int:
        """Smallest size a VideoBlob can have (the sample video's size)."""
        return len(sample_video())

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
        """Hex SHA-256 of the whole blob (streamed once, then cached)."""
        with self._lock:
            if self._sha256 is None:
                digest = hashlib.sha256()
                for chunk in self.iter_bytes():
                    digest.update(chunk)
                self._sha256 = digest.hexdigest()
            return self._sha256

    def __repr__(self) -> str:
        return f"VideoBlob(size={self.size}, variant={self.variant})"


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


def looks_like_mp4(first_bytes: bytes) -> bool:
    """True when the bytes start with a plausible ``ftyp`` box (brands are printable)."""
    if len(first_bytes) < 12:
        return False
    size, kind, major_brand = struct.unpack_from(">I4s4s", first_bytes, 0)
    if kind != b"ftyp" or not 16 <= size <= 1024 or (size - 16) % 4:
        return False
    return all(0x20 <= byte <= 0x7E for byte in major_brand)
