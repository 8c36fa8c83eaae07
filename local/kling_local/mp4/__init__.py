"""Pure-Python generator of small, playable MP4 files (H.264 Constrained Baseline) for local runs.

The simulator serves these as generated videos: deterministic per (size, variant, seconds),
any size from the clip's own up (padded with a ``free`` box), read at random offsets or
streamed without being held in memory, and decodable by browsers and ffmpeg alike.
"""

from kling_pipeline.media import looks_like_mp4

from .blob import MAX_VARIANT, VideoBlob, parse_boxes, sample_video
from .clip import DEFAULT_SECONDS, FPS, KEYFRAME_INTERVAL, encode_clip
from .h264 import codec_string
from .pictures import HEIGHT, WIDTH

__all__ = [
    "DEFAULT_SECONDS",
    "FPS",
    "HEIGHT",
    "KEYFRAME_INTERVAL",
    "MAX_VARIANT",
    "WIDTH",
    "VideoBlob",
    "codec_string",
    "encode_clip",
    "looks_like_mp4",
    "parse_boxes",
    "sample_video",
]
