"""ISO-BMFF writer: one H.264 video track (``avc1`` + ``avcC``) as ftyp + moov + mdat."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import h264

MOVIE_TIMESCALE = 1000
FTYP_BRANDS = (b"isom", b"iso2", b"avc1", b"mp41")

_IDENTITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4  # ISO-639 "und" packed as three 5-bit letters


@dataclass(frozen=True)
class Track:
    """An encoded video track: samples in decoding order and the 0-based indexes of keyframes."""

    width: int
    height: int
    fps: int
    samples: tuple[bytes, ...]
    sync: tuple[int, ...]
    sps: bytes
    pps: bytes

    @property
    def media_timescale(self) -> int:
        return self.fps * 1000


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


FTYP = box(b"ftyp", b"isom", struct.pack(">I", 0x200), *FTYP_BRANDS)


def _sample_entry(track: Track) -> bytes:
    compressor = b"\x0fkling-local avc".ljust(32, b"\x00")
    colour = box(
        b"colr",
        b"nclx",
        struct.pack(
            ">HHHB",
            h264.COLOUR_PRIMARIES,
            h264.TRANSFER_CHARACTERISTICS,
            h264.MATRIX_COEFFICIENTS,
            0,  # full_range_flag: limited range, as the SPS says
        ),
    )
    return box(
        b"avc1",
        b"\x00" * 6,
        struct.pack(">H", 1),  # data_reference_index
        b"\x00" * 16,
        struct.pack(">HHIII", track.width, track.height, 0x00480000, 0x00480000, 0),
        struct.pack(">H", 1),  # frame_count per sample
        compressor,
        struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
        box(b"avcC", h264.decoder_configuration(track.sps, track.pps)),
        colour,
    )


def _sample_table(track: Track, first_offset: int) -> bytes:
    count = len(track.samples)
    offsets: list[int] = []
    position = first_offset
    for sample in track.samples:
        offsets.append(position)
        position += len(sample)
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(track)),
        full_box(b"stts", 0, 0, struct.pack(">III", 1, count, track.media_timescale // track.fps)),
        # Sample numbers are 1-based; a P frame is not a place a player may start decoding.
        full_box(
            b"stss",
            0,
            0,
            struct.pack(f">I{len(track.sync)}I", len(track.sync), *(i + 1 for i in track.sync)),
        ),
        # One sample per chunk keeps every stco entry pointing at a frame start.
        full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, 1, 1)),
        full_box(b"stsz", 0, 0, struct.pack(f">II{count}I", 0, count, *map(len, track.samples))),
        full_box(b"stco", 0, 0, struct.pack(f">I{count}I", count, *offsets)),
    )


def _moov(track: Track, first_offset: int, creation_time: int) -> bytes:
    count = len(track.samples)
    movie_duration = count * MOVIE_TIMESCALE // track.fps
    media_duration = count * track.media_timescale // track.fps
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIIIIH", creation_time, creation_time, MOVIE_TIMESCALE, movie_duration,
                    0x00010000, 0x0100),
        b"\x00" * 10,
        _IDENTITY_MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),  # next_track_ID
    )  # fmt: skip
    tkhd = full_box(
        b"tkhd", 0, 0x000003,  # enabled, in movie
        struct.pack(">IIIII", creation_time, creation_time, 1, 0, movie_duration),
        b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0, 0),
        _IDENTITY_MATRIX,
        struct.pack(">II", track.width << 16, track.height << 16),
    )  # fmt: skip
    mdhd = full_box(
        b"mdhd", 0, 0,
        struct.pack(">IIIIHH", creation_time, creation_time, track.media_timescale,
                    media_duration, _LANGUAGE_UND, 0),
    )  # fmt: skip
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    minf = box(b"minf", vmhd, dinf, _sample_table(track, first_offset))
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    return box(b"moov", mvhd, trak)


def mp4_file(track: Track, creation_time: int, mdat_extra: int = 0) -> bytes:
    """ftyp + moov + mdat, moov first so a player can start before the end has arrived.

    ``mdat_extra`` zero bytes trail the samples inside mdat (no sample points at them).
    """
    # moov's size does not depend on the offset values, so a dry run tells where mdat starts.
    moov_size = len(_moov(track, 0, creation_time))
    first_offset = len(FTYP) + moov_size + 8
    moov = _moov(track, first_offset, creation_time)
    mdat_payload = sum(map(len, track.samples)) + mdat_extra
    mdat_header = struct.pack(">I4s", 8 + mdat_payload, b"mdat")
    return FTYP + moov + mdat_header + b"".join(track.samples) + b"\x00" * mdat_extra
