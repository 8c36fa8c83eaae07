"""Encodes the synthetic clip of one variant: the pictures, then H.264 samples for the track."""

from __future__ import annotations

from functools import lru_cache

from . import h264, pictures
from .container import Track

FPS = 12
DEFAULT_SECONDS = 5
MAX_SECONDS = 60
# A keyframe every two seconds: players can seek, and frame_num (below 2**LOG2_MAX_FRAME_NUM)
# never wraps inside a group.
KEYFRAME_INTERVAL = 2 * FPS


@lru_cache(maxsize=16)
def encode_clip(variant: int, seconds: int = DEFAULT_SECONDS) -> Track:
    """The clip of ``variant`` lasting ``seconds`` at FPS: keyframes of I_PCM macroblocks, and
    between them P frames that resend only the macroblocks the moving parts touch."""
    if not 1 <= seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in [1, {MAX_SECONDS}]")
    frame_count = seconds * FPS
    macroblock_count = pictures.MB_COLS * pictures.MB_ROWS
    samples: list[bytes] = []
    sync: list[int] = []
    for frame in range(frame_count):
        picture = pictures.render(variant, frame, frame_count)
        group, position = divmod(frame, KEYFRAME_INTERVAL)
        if position == 0:
            blocks = [picture.macroblock(address) for address in range(macroblock_count)]
            nal = h264.idr_picture(blocks, idr_pic_id=group % 2)
            sync.append(frame)
        else:
            changed = pictures.changed_macroblocks(frame, frame_count)
            coded = [(address, picture.macroblock(address)) for address in changed]
            nal = h264.p_picture(macroblock_count, coded, frame_num=position)
        samples.append(h264.length_prefixed(nal))
    return Track(
        width=pictures.WIDTH,
        height=pictures.HEIGHT,
        fps=FPS,
        samples=tuple(samples),
        sync=tuple(sync),
        sps=h264.sequence_parameter_set(pictures.MB_COLS, pictures.MB_ROWS, FPS),
        pps=h264.picture_parameter_set(),
    )
