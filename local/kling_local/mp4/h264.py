"""A minimal H.264 (Constrained Baseline) encoder: I_PCM macroblocks, P_Skip for unchanged ones.

No transform, no prediction search: a changed macroblock is sent as raw 8-bit samples (I_PCM,
lossless), an unchanged one as P_Skip (copied from the previous picture with a zero motion
vector). Only the headers are entropy coded (CAVLC Exp-Golomb), so the encoder stays tiny
and exact, and every decoder (browsers included) reads the result.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence

PROFILE_IDC = 66  # Baseline
# constraint_set0 + constraint_set1: Constrained Baseline, the profile every player decodes.
CONSTRAINT_FLAGS = 0xC0
LEVEL_IDC = 20  # level 2.0: up to 396 macroblocks a frame and 2 Mbit/s
LOG2_MAX_FRAME_NUM = 5  # frame_num counts up to 31: a keyframe interval must stay below 32

# nal_unit_type values and nal_ref_idc: every picture is a reference for the next one.
_NAL_SLICE = 1
_NAL_IDR = 5
_NAL_SPS = 7
_NAL_PPS = 8
_REF_IDC = 3

_SLICE_TYPE_P = 5  # "all slices of the picture are P"
_SLICE_TYPE_I = 7  # "all slices of the picture are I"
_MB_TYPE_I_PCM_IN_I = 25
_MB_TYPE_I_PCM_IN_P = 5 + 25  # intra types follow the five P types in a P slice
_DEBLOCKING_OFF = 1  # disable_deblocking_filter_idc: raw samples must reach the screen as sent

# Colour description written in the SPS: ITU-R BT.601 (SMPTE 170M), limited range.
COLOUR_PRIMARIES = 6
TRANSFER_CHARACTERISTICS = 6
MATRIX_COEFFICIENTS = 6

# A start-code prefix (00 00 00/01/02/03) must never appear inside a NAL unit payload.
_EMULATION = re.compile(b"\x00\x00(?=[\x00-\x03])")


class BitWriter:
    """MSB-first bit string writer with the Exp-Golomb codes of the H.264 syntax."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._count = 0

    def u(self, value: int, width: int) -> None:
        """Fixed-width unsigned field."""
        if value >> width:
            raise ValueError(f"{value} does not fit in {width} bits")
        self._acc = (self._acc << width) | value
        self._count += width
        while self._count >= 8:
            self._count -= 8
            self._out.append((self._acc >> self._count) & 0xFF)
        self._acc &= (1 << self._count) - 1

    def ue(self, value: int) -> None:
        """Unsigned Exp-Golomb: value + 1 in binary after as many zeros as it has bits, less one."""
        code = value + 1
        self.u(code, 2 * code.bit_length() - 1)

    def se(self, value: int) -> None:
        """Signed Exp-Golomb: 1, -1, 2, -2, ... map to 1, 2, 3, 4, ..."""
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        """Zero bits up to the next byte boundary (pcm_alignment_zero_bit)."""
        if self._count:
            self.u(0, 8 - self._count)

    def raw(self, data: bytes) -> None:
        """Whole bytes at a byte boundary (the I_PCM samples)."""
        if self._count:
            raise ValueError("raw bytes need a byte-aligned writer")
        self._out += data

    def rbsp(self) -> bytes:
        """The bytes written so far closed with rbsp_trailing_bits (a one, then zero bits)."""
        self.u(1, 1)
        self.align_zero()
        return bytes(self._out)


def nal_unit(nal_type: int, rbsp: bytes, ref_idc: int = _REF_IDC) -> bytes:
    """A NAL unit: its header byte, then the payload with emulation prevention bytes."""
    return bytes((ref_idc << 5 | nal_type,)) + _EMULATION.sub(b"\x00\x00\x03", rbsp)


def sequence_parameter_set(mb_cols: int, mb_rows: int, fps: int) -> bytes:
    """SPS NAL unit: 4:2:0 8-bit frames of mb_cols x mb_rows macroblocks at ``fps``."""
    bits = BitWriter()
    bits.u(PROFILE_IDC, 8)
    bits.u(CONSTRAINT_FLAGS, 8)
    bits.u(LEVEL_IDC, 8)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(LOG2_MAX_FRAME_NUM - 4)
    bits.ue(2)  # pic_order_cnt_type 2: output order is decoding order, nothing in slice headers
    bits.ue(1)  # max_num_ref_frames
    bits.u(0, 1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mb_cols - 1)
    bits.ue(mb_rows - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    bits.u(0, 1)  # frame_cropping_flag
    bits.u(1, 1)  # vui_parameters_present_flag
    _vui(bits, fps)
    return nal_unit(_NAL_SPS, bits.rbsp())


def _vui(bits: BitWriter, fps: int) -> None:
    bits.u(0, 1)  # aspect_ratio_info_present_flag (square pixels by default)
    bits.u(0, 1)  # overscan_info_present_flag
    bits.u(1, 1)  # video_signal_type_present_flag
    bits.u(5, 3)  # video_format: unspecified
    bits.u(0, 1)  # video_full_range_flag: samples use 16..235 / 16..240
    bits.u(1, 1)  # colour_description_present_flag
    bits.u(COLOUR_PRIMARIES, 8)
    bits.u(TRANSFER_CHARACTERISTICS, 8)
    bits.u(MATRIX_COEFFICIENTS, 8)
    bits.u(0, 1)  # chroma_loc_info_present_flag
    bits.u(1, 1)  # timing_info_present_flag
    bits.u(1, 32)  # num_units_in_tick
    bits.u(2 * fps, 32)  # time_scale: two ticks (fields) per frame
    bits.u(1, 1)  # fixed_frame_rate_flag
    bits.u(0, 1)  # nal_hrd_parameters_present_flag
    bits.u(0, 1)  # vcl_hrd_parameters_present_flag
    bits.u(0, 1)  # pic_struct_present_flag
    # Bitstream restrictions tell a player it may show each frame as soon as it is decoded.
    bits.u(1, 1)  # bitstream_restriction_flag
    bits.u(1, 1)  # motion_vectors_over_pic_boundaries_flag
    bits.ue(0)  # max_bytes_per_pic_denom: no limit
    bits.ue(0)  # max_bits_per_mb_denom: no limit
    bits.ue(15)  # log2_max_mv_length_horizontal
    bits.ue(15)  # log2_max_mv_length_vertical
    bits.ue(0)  # max_num_reorder_frames
    bits.ue(1)  # max_dec_frame_buffering


def picture_parameter_set() -> bytes:
    """PPS NAL unit: CAVLC, one reference, deblocking control present (slices turn it off)."""
    bits = BitWriter()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(0, 1)  # entropy_coding_mode_flag: CAVLC
    bits.u(0, 1)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(0, 1)  # weighted_pred_flag
    bits.u(0, 2)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 1)  # deblocking_filter_control_present_flag
    bits.u(0, 1)  # constrained_intra_pred_flag
    bits.u(0, 1)  # redundant_pic_cnt_present_flag
    return nal_unit(_NAL_PPS, bits.rbsp())


def idr_picture(macroblocks: Sequence[bytes], idr_pic_id: int) -> bytes:
    """IDR NAL unit: one I slice whose macroblocks (384 raw samples each) are all I_PCM."""
    bits = BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(_SLICE_TYPE_I)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(0, LOG2_MAX_FRAME_NUM)  # frame_num restarts at every IDR
    bits.ue(idr_pic_id)
    bits.u(0, 1)  # no_output_of_prior_pics_flag
    bits.u(0, 1)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta (no residual is coded, so QP plays no part)
    bits.ue(_DEBLOCKING_OFF)
    for samples in macroblocks:
        bits.ue(_MB_TYPE_I_PCM_IN_I)
        bits.align_zero()
        bits.raw(samples)
    return nal_unit(_NAL_IDR, bits.rbsp())


def p_picture(macroblock_count: int, changed: Iterable[tuple[int, bytes]], frame_num: int) -> bytes:
    """Non-IDR NAL unit: one P slice; ``changed`` (address, samples) are I_PCM, the rest P_Skip.

    With every coded macroblock intra and every skipped one predicted from zero vectors, each
    P_Skip vector is zero too, so a skipped macroblock is an exact copy of the previous picture.
    """
    bits = BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(_SLICE_TYPE_P)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(frame_num % (1 << LOG2_MAX_FRAME_NUM), LOG2_MAX_FRAME_NUM)
    bits.u(0, 1)  # num_ref_idx_active_override_flag
    bits.u(0, 1)  # ref_pic_list_modification_flag_l0
    bits.u(0, 1)  # adaptive_ref_pic_marking_mode_flag: sliding window
    bits.se(0)  # slice_qp_delta
    bits.ue(_DEBLOCKING_OFF)
    next_address = 0
    for address, samples in sorted(changed):
        if not next_address <= address < macroblock_count:
            raise ValueError(f"macroblock address {address} out of order or range")
        bits.ue(address - next_address)  # mb_skip_run
        bits.ue(_MB_TYPE_I_PCM_IN_P)
        bits.align_zero()
        bits.raw(samples)
        next_address = address + 1
    if next_address < macroblock_count:
        bits.ue(macroblock_count - next_address)
    return nal_unit(_NAL_SLICE, bits.rbsp())


def decoder_configuration(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (the body of an ``avcC`` box), 4-byte NAL lengths."""
    return (
        bytes((1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1))
        + struct.pack(">H", len(sps))
        + sps
        + bytes((1,))
        + struct.pack(">H", len(pps))
        + pps
    )


def length_prefixed(nal: bytes) -> bytes:
    """One MP4 sample: the NAL unit behind its 4-byte big-endian length."""
    return struct.pack(">I", len(nal)) + nal


def codec_string() -> str:
    """The RFC 6381 codecs parameter of the stream, e.g. for a <source type=...> attribute."""
    return f"avc1.{PROFILE_IDC:02X}{CONSTRAINT_FLAGS:02X}{LEVEL_IDC:02X}"
