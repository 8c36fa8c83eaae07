"""The one MP4 signature check, shared by the finalize step and the local tooling."""

from __future__ import annotations

import struct

#: Enough bytes to judge: the `ftyp` box header plus its major brand.
MP4_HEAD_BYTES = 12


def looks_like_mp4(head: bytes) -> bool:
    """True when `head` starts with a plausible ISO-BMFF `ftyp` box.

    The box is 16..4096 bytes (size, type, major brand, minor version, then 4-byte compatible
    brands) and its major brand is printable ASCII: HTML error pages, JSON and random bytes fail.
    """
    if len(head) < MP4_HEAD_BYTES:
        return False
    size, kind, major_brand = struct.unpack_from(">I4s4s", head, 0)
    if kind != b"ftyp" or not 16 <= size <= 4096 or (size - 16) % 4:
        return False
    return all(0x20 <= byte <= 0x7E for byte in major_brand)
