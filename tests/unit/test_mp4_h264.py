"""Unit tests for the H.264 bitstream and the synthetic pictures behind the simulator's videos.

The decoder here is written from the H.264 syntax tables, apart from the encoder, and covers
exactly the subset the encoder may use (I_PCM and P_Skip); ffmpeg checks the same stream in
test_mp4.py when it is installed.
"""

from __future__ import annotations

import re
import struct

import pytest

from kling_local import mp4
from kling_local.mp4 import h264
from kling_local.mp4 import pictures as synthetic

MB_COUNT = synthetic.MB_COLS * synthetic.MB_ROWS
MB_SAMPLES = 384


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def u(self, width: int) -> int:
        value = 0
        for _ in range(width):
            byte = self.data[self.position // 8]
            value = value << 1 | (byte >> (7 - self.position % 8)) & 1
            self.position += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)

    def align(self) -> None:
        while self.position % 8:
            assert self.u(1) == 0, "pcm_alignment_zero_bit must be zero"

    def take(self, count: int) -> bytes:
        assert self.position % 8 == 0
        start = self.position // 8
        self.position += 8 * count
        return self.data[start : start + count]

    def at_trailing_bits(self) -> bool:
        rest = len(self.data) * 8 - self.position
        return 0 < rest <= 8 and self.u(rest) == 1 << (rest - 1)


def rbsp_of(nal: bytes) -> bytes:
    """The payload of a NAL unit with emulation prevention bytes removed."""
    return re.sub(b"\x00\x00\x03", b"\x00\x00", nal[1:])


def decode_sps(nal: bytes) -> dict[str, int]:
    bits = BitReader(rbsp_of(nal))
    fields = {"profile": bits.u(8), "constraints": bits.u(8), "level": bits.u(8)}
    fields["sps_id"] = bits.ue()
    fields["log2_max_frame_num"] = bits.ue() + 4
    fields["poc_type"] = bits.ue()
    fields["max_num_ref_frames"] = bits.ue()
    fields["gaps_allowed"] = bits.u(1)
    fields["width_mbs"] = bits.ue() + 1
    fields["height_mbs"] = bits.ue() + 1
    fields["frame_mbs_only"] = bits.u(1)
    return fields


def decode_picture(nal: bytes, reference: list[bytes] | None, frame_num_bits: int) -> list[bytes]:
    """Macroblock samples of one picture (I slice of I_PCM, or P slice of P_Skip + I_PCM)."""
    kind = nal[0] & 0x1F
    bits = BitReader(rbsp_of(nal))
    assert bits.ue() == 0  # first_mb_in_slice: one slice per picture
    slice_type = bits.ue()
    assert bits.ue() == 0  # pps id
    bits.u(frame_num_bits)
    if kind == 5:
        bits.ue()  # idr_pic_id
        assert (bits.u(1), bits.u(1)) == (0, 0)
    else:
        assert (bits.u(1), bits.u(1), bits.u(1)) == (0, 0, 0)
    assert bits.se() == 0  # slice_qp_delta
    assert bits.ue() == 1  # deblocking off, so decoded samples are exactly the sent ones
    blocks: list[bytes] = []
    if slice_type == 7:
        for _ in range(MB_COUNT):
            assert bits.ue() == 25  # I_PCM
            bits.align()
            blocks.append(bits.take(MB_SAMPLES))
    else:
        assert slice_type == 5 and reference is not None
        while len(blocks) < MB_COUNT:
            skip = bits.ue()
            blocks += reference[len(blocks) : len(blocks) + skip]
            if len(blocks) == MB_COUNT:
                break
            assert bits.ue() == 30  # I_PCM in a P slice
            bits.align()
            blocks.append(bits.take(MB_SAMPLES))
    assert bits.at_trailing_bits(), "slice data must end with rbsp_trailing_bits"
    return blocks


def decode_clip(variant: int, seconds: int) -> list[list[bytes]]:
    track = mp4.encode_clip(variant, seconds)
    sps = decode_sps(track.sps)
    decoded: list[list[bytes]] = []
    for sample in track.samples:
        (length,) = struct.unpack_from(">I", sample)
        assert length == len(sample) - 4
        previous = decoded[-1] if decoded else None
        decoded.append(decode_picture(sample[4:], previous, sps["log2_max_frame_num"]))
    return decoded


def source_blocks(variant: int, frame: int, frame_count: int) -> list[bytes]:
    picture = synthetic.render(variant, frame, frame_count)
    return [picture.macroblock(address) for address in range(MB_COUNT)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "1"), (1, "010"), (2, "011"), (3, "00100"), (7, "0001000"), (30, "000011111")],
)
def test_ue_writes_exp_golomb_code_when_given_value(value: int, expected: str) -> None:
    # Given a writer / When writing one ue(v) value and closing the RBSP
    writer = h264.BitWriter()
    writer.ue(value)
    written = writer.rbsp()

    # Then the bits are the Exp-Golomb code followed by the stop bit and zero padding
    bits = "".join(f"{byte:08b}" for byte in written)
    assert bits.startswith(expected + "1")
    assert set(bits[len(expected) + 1 :]) <= {"0"}


@pytest.mark.parametrize("value", [0, 1, -1, 2, -2, 26, -26])
def test_se_round_trips_when_read_back(value: int) -> None:
    # Given a signed value written as se(v) / When read back / Then it is the same value
    writer = h264.BitWriter()
    writer.se(value)
    assert BitReader(writer.rbsp()).se() == value


@pytest.mark.parametrize(
    ("rbsp", "escaped"),
    [
        (b"\x00\x00\x01\x80", b"\x00\x00\x03\x01\x80"),
        (b"\x00\x00\x00\x00\x02", b"\x00\x00\x03\x00\x00\x03\x02"),
        (b"\x00\x00\x04", b"\x00\x00\x04"),
        (b"\x12\x00\x00\x03\x00", b"\x12\x00\x00\x03\x03\x00"),
    ],
)
def test_nal_unit_escapes_start_code_emulation_when_payload_has_zero_runs(
    rbsp: bytes, escaped: bytes
) -> None:
    # Given an RBSP holding 00 00 0x runs / When wrapped in a NAL unit / Then each is escaped
    nal = h264.nal_unit(1, rbsp)
    assert nal[1:] == escaped
    assert rbsp_of(nal) == rbsp


def test_writer_refuses_field_when_value_too_wide() -> None:
    # Given a 3-bit field / When given a 4-bit value / Then it is refused, not truncated
    with pytest.raises(ValueError):
        h264.BitWriter().u(8, 3)


def test_sps_describes_picture_geometry_when_decoded() -> None:
    # Given the clip's SPS / When decoded independently
    sps = decode_sps(mp4.encode_clip(0).sps)

    # Then it is Constrained Baseline 4:2:0 of WIDTH x HEIGHT, progressive, one reference
    assert (sps["profile"], sps["constraints"], sps["level"]) == (66, 0xC0, 20)
    assert (sps["width_mbs"] * 16, sps["height_mbs"] * 16) == (mp4.WIDTH, mp4.HEIGHT)
    assert (sps["frame_mbs_only"], sps["poc_type"], sps["max_num_ref_frames"]) == (1, 2, 1)
    assert sps["gaps_allowed"] == 0
    assert 1 << sps["log2_max_frame_num"] > mp4.KEYFRAME_INTERVAL


@pytest.mark.parametrize(("variant", "seconds"), [(0, 5), (0xABCDEF, 10)])
def test_decoded_frames_equal_rendered_pictures_when_clip_decoded(
    variant: int, seconds: int
) -> None:
    # Given an encoded clip
    frame_count = seconds * mp4.FPS

    # When every frame is decoded, skipped macroblocks copied from the previous frame
    decoded = decode_clip(variant, seconds)

    # Then each decoded frame is exactly the rendered picture
    assert len(decoded) == frame_count
    for frame, blocks in enumerate(decoded):
        assert blocks == source_blocks(variant, frame, frame_count), f"frame {frame}"


@pytest.mark.parametrize("variant", [0, 7, 0x123456])
def test_changed_macroblocks_cover_every_difference_when_frames_advance(variant: int) -> None:
    # Given consecutive rendered frames of a 10-second clip
    frame_count = 10 * mp4.FPS
    previous = source_blocks(variant, 0, frame_count)
    for frame in range(1, frame_count):
        current = source_blocks(variant, frame, frame_count)

        # When comparing them macroblock by macroblock
        differing = {n for n in range(MB_COUNT) if current[n] != previous[n]}

        # Then the geometry names every macroblock that differs, and something always moves
        changed = synthetic.changed_macroblocks(frame, frame_count)
        assert differing <= changed, f"frame {frame}"
        assert differing
        assert len(changed) < MB_COUNT // 2
        previous = current


def test_square_moves_every_frame_when_clip_plays() -> None:
    # Given the square's positions over a clip / Then no two consecutive frames share one
    positions = [synthetic.square_rect(frame)[0] for frame in range(10 * mp4.FPS)]
    assert all(a != b for a, b in zip(positions, positions[1:], strict=False))
    assert min(positions) == 0
    assert max(positions) + 24 == mp4.WIDTH


def read_variant_code(picture: synthetic.Picture) -> int:
    """The 24-bit code drawn in the top band, read from the luma at each cell's centre."""
    value = 0
    for bit in range(synthetic.VARIANT_BITS):
        centre = 8 * mp4.WIDTH + 8 + bit * 6 + 2
        value = value << 1 | (picture.luma[centre] > 128)
    return value


@pytest.mark.parametrize("variant", [0, 1, 0x800000, 0xC0FFEE, mp4.MAX_VARIANT - 1])
def test_picture_shows_variant_code_when_rendered(variant: int) -> None:
    # Given a rendered frame / When reading the code band / Then it spells the variant
    assert read_variant_code(synthetic.render(variant, 0, 60)) == variant


def test_palettes_differ_between_variants_when_many_drawn() -> None:
    # Given the bar colours of many variants
    palettes = {synthetic.palette(variant) for variant in range(200)}

    # Then every variant gets its own, and all samples stay in the limited range
    assert len(palettes) == 200
    for colours in palettes:
        for luma, cb, cr in colours:
            assert 16 <= luma <= 235 and 16 <= cb <= 240 and 16 <= cr <= 240
