"""Synthetic frames that tell jobs apart: variant-coloured bars, a bit code, a moving square.

Each picture is 4:2:0 limited-range Y'CbCr. The layout, top to bottom: a dark band with the
variant written as 24 bits (light cell = 1), colour bars whose palette the variant picks, a
white square bouncing across the bars, and a progress bar that fills over the clip. Only the
square and the progress bar move, so :func:`changed_macroblocks` can name, from geometry alone,
the macroblocks that differ between two consecutive frames; that keeps the encoded size the
same for every variant.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass
from functools import lru_cache

WIDTH = 160
HEIGHT = 96
MB_SIZE = 16
MB_COLS = WIDTH // MB_SIZE
MB_ROWS = HEIGHT // MB_SIZE
VARIANT_BITS = 24

_BAR_COUNT = 8
_BARS_TOP, _BARS_BOTTOM = 16, 80
_CODE_LEFT, _CODE_TOP, _CODE_CELL, _CODE_HEIGHT = 8, 4, 6, 8
_SQUARE, _SQUARE_TOP, _SQUARE_STEP = 24, 36, 4
_PROGRESS_TOP, _PROGRESS_HEIGHT = 84, 8

Colour = tuple[int, int, int]  # (Y', Cb, Cr)
Rect = tuple[int, int, int, int]  # (x, y, width, height), all even so chroma stays aligned

_DARK: Colour = (32, 128, 128)
_CODE_OFF: Colour = (64, 128, 128)
_CODE_ON: Colour = (220, 128, 128)
_WHITE: Colour = (235, 128, 128)
_BLACK: Colour = (16, 128, 128)
_PROGRESS: Colour = (180, 90, 150)


def rgb_to_ycbcr(red: float, green: float, blue: float) -> Colour:
    """ITU-R BT.601 limited range from 0..1 RGB (what the SPS colour description declares)."""
    luma = 16 + 65.481 * red + 128.553 * green + 24.966 * blue
    cb = 128 - 37.797 * red - 74.203 * green + 112.0 * blue
    cr = 128 + 112.0 * red - 93.786 * green - 18.214 * blue
    return (_clamp(luma, 235), _clamp(cb, 240), _clamp(cr, 240))


def _clamp(value: float, top: int) -> int:
    return min(top, max(16, round(value)))


def palette(variant: int) -> tuple[Colour, ...]:
    """The bar colours of a variant: hue start, hue step, saturation and brightness vary."""
    digest = hashlib.sha256(b"kling-local palette %d" % variant).digest()
    start = digest[0] / 256
    step = (2 + digest[1] % 5) / 24
    colours = []
    for index in range(_BAR_COUNT):
        hue = (start + index * step) % 1.0
        saturation = 0.5 + 0.45 * digest[2 + index] / 255
        value = 0.95 if (index + digest[10]) % 2 else 0.7
        colours.append(rgb_to_ycbcr(*colorsys.hsv_to_rgb(hue, saturation, value)))
    return tuple(colours)


@dataclass(frozen=True)
class Picture:
    """One frame's planes: luma WIDTH x HEIGHT, each chroma plane half that in both directions."""

    luma: bytes
    cb: bytes
    cr: bytes

    def macroblock(self, address: int) -> bytes:
        """The 384 I_PCM samples of a macroblock: 16x16 luma, then 8x8 Cb, then 8x8 Cr."""
        row, col = divmod(address, MB_COLS)
        top, left = row * MB_SIZE, col * MB_SIZE
        half = WIDTH // 2
        luma_starts = range(top * WIDTH + left, (top + MB_SIZE) * WIDTH, WIDTH)
        rows = [self.luma[start : start + MB_SIZE] for start in luma_starts]
        chroma_starts = range((top // 2) * half + left // 2, (top // 2 + MB_SIZE // 2) * half, half)
        for plane in (self.cb, self.cr):
            rows += [plane[start : start + MB_SIZE // 2] for start in chroma_starts]
        return b"".join(rows)


class _Canvas:
    def __init__(self, base: Picture) -> None:
        self.luma = bytearray(base.luma)
        self.cb = bytearray(base.cb)
        self.cr = bytearray(base.cr)

    def fill(self, rect: Rect, colour: Colour) -> None:
        x, y, width, height = rect
        if width <= 0 or height <= 0:
            return
        for row in range(y, y + height):
            self.luma[row * WIDTH + x : row * WIDTH + x + width] = bytes((colour[0],)) * width
        half = WIDTH // 2
        for plane, value in ((self.cb, colour[1]), (self.cr, colour[2])):
            for row in range(y // 2, (y + height) // 2):
                plane[row * half + x // 2 : row * half + (x + width) // 2] = bytes((value,)) * (
                    width // 2
                )

    def picture(self) -> Picture:
        return Picture(bytes(self.luma), bytes(self.cb), bytes(self.cr))


@lru_cache(maxsize=8)
def background(variant: int) -> Picture:
    """Everything that stays still: the code band, the bars and the empty progress track."""
    blank = Picture(
        bytes((_DARK[0],)) * (WIDTH * HEIGHT),
        bytes((_DARK[1],)) * (WIDTH * HEIGHT // 4),
        bytes((_DARK[2],)) * (WIDTH * HEIGHT // 4),
    )
    canvas = _Canvas(blank)
    for bit in range(VARIANT_BITS):
        # Most significant bit first, so the code reads left to right like the number.
        on = (variant >> (VARIANT_BITS - 1 - bit)) & 1
        cell = (_CODE_LEFT + bit * _CODE_CELL, _CODE_TOP, _CODE_CELL - 2, _CODE_HEIGHT)
        canvas.fill(cell, _CODE_ON if on else _CODE_OFF)
    bar_width = WIDTH // _BAR_COUNT
    for index, colour in enumerate(palette(variant)):
        canvas.fill((index * bar_width, _BARS_TOP, bar_width, _BARS_BOTTOM - _BARS_TOP), colour)
    return canvas.picture()


def square_rect(frame: int) -> Rect:
    """Where the square is in ``frame``: it bounces between the left and right edges."""
    span = WIDTH - _SQUARE
    travel = (frame * _SQUARE_STEP) % (2 * span)
    x = travel if travel <= span else 2 * span - travel
    return (x, _SQUARE_TOP, _SQUARE, _SQUARE)


def progress_width(frame: int, frame_count: int) -> int:
    """Filled width of the progress bar in ``frame`` (even, full on the last frame)."""
    return 2 * round((WIDTH // 2) * (frame + 1) / frame_count)


def render(variant: int, frame: int, frame_count: int) -> Picture:
    """Frame ``frame`` of ``frame_count`` for ``variant``."""
    canvas = _Canvas(background(variant))
    x, y, size, _ = square_rect(frame)
    canvas.fill((x, y, size, size), _BLACK)
    canvas.fill((x + 2, y + 2, size - 4, size - 4), _WHITE)
    canvas.fill((0, _PROGRESS_TOP, progress_width(frame, frame_count), _PROGRESS_HEIGHT), _PROGRESS)
    return canvas.picture()


def changed_macroblocks(frame: int, frame_count: int) -> frozenset[int]:
    """Addresses of the macroblocks that may differ between ``frame - 1`` and ``frame``."""
    if frame == 0:
        return frozenset(range(MB_COLS * MB_ROWS))
    before = progress_width(frame - 1, frame_count)
    after = progress_width(frame, frame_count)
    rects = [
        square_rect(frame - 1),
        square_rect(frame),
        (min(before, after), _PROGRESS_TOP, abs(after - before), _PROGRESS_HEIGHT),
    ]
    return frozenset(address for rect in rects for address in _covered(rect))


def _covered(rect: Rect) -> list[int]:
    x, y, width, height = rect
    if width <= 0 or height <= 0:
        return []
    cols = range(x // MB_SIZE, (x + width - 1) // MB_SIZE + 1)
    rows = range(y // MB_SIZE, (y + height - 1) // MB_SIZE + 1)
    return [row * MB_COLS + col for row in rows for col in cols]
