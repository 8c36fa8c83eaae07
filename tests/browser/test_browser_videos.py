"""The simulator's videos play in a real browser: headless Chromium loads, decodes and seeks."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

import pytest

from kling_local import mp4
from kling_local.mp4 import VideoBlob
from tests.browser.conftest import ARTIFACTS, PageCheck, SiteServer
from tests.browser.harness import Chromium, Page

SCREENSHOT = "browser-videos.png"
SEEK_SCREENSHOT = "browser-videos-seeked.png"


@dataclass(frozen=True)
class Clip:
    name: str
    variant: int
    seconds: int
    size: int | None = None  # padded with a free box when larger than the clip


CLIPS = (
    Clip("first.mp4", 1, 5),
    Clip("long.mp4", 0xC0FFEE, 10),
    Clip("padded.mp4", 0x2A5A5A, 5, size=3_000_000),
)

# Reads the 24-bit code band of each video's current frame, drawn at its native size.
_READ_CODES_JS = f"""
(() => {{
  const canvas = document.createElement('canvas');
  canvas.width = {mp4.WIDTH};
  canvas.height = {mp4.HEIGHT};
  const context = canvas.getContext('2d', {{willReadFrequently: true}});
  return Array.from(document.querySelectorAll('video')).map((video) => {{
    context.drawImage(video, 0, 0, {mp4.WIDTH}, {mp4.HEIGHT});
    const row = context.getImageData(0, 8, {mp4.WIDTH}, 1).data;
    let code = 0;
    for (let bit = 0; bit < 24; bit++) code = code * 2 + (row[(8 + bit * 6 + 2) * 4] > 128 ? 1 : 0);
    return code;
  }});
}})()
"""


def _pixel_js(x: int, y: int) -> str:
    return f"""
(() => {{
  const canvas = document.createElement('canvas');
  canvas.width = {mp4.WIDTH};
  canvas.height = {mp4.HEIGHT};
  const context = canvas.getContext('2d', {{willReadFrequently: true}});
  return Array.from(document.querySelectorAll('video')).map((video) => {{
    context.drawImage(video, 0, 0, {mp4.WIDTH}, {mp4.HEIGHT});
    return Array.from(context.getImageData({x}, {y}, 1, 1).data.slice(0, 3));
  }});
}})()
"""


def _seek_all_js(seconds: float) -> str:
    return f"""
Promise.all(Array.from(document.querySelectorAll('video')).map((video) => new Promise((done) => {{
  video.addEventListener('seeked', () => done(video.currentTime), {{once: true}});
  video.currentTime = {seconds};
}})))
"""


def write_gallery(directory: Path) -> Path:
    """The clips next to a page showing each at three times its size, pixels kept sharp."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = []
    for clip in CLIPS:
        blob = VideoBlob(clip.size, variant=clip.variant, seconds=clip.seconds)
        with (directory / clip.name).open("wb") as handle:
            for chunk in blob.iter_bytes():
                handle.write(chunk)
        caption = f"{clip.name}: variant {clip.variant:#08x}, {clip.seconds} s, {blob.size} bytes"
        figures.append(
            f'<figure><video src="{escape(clip.name)}" preload="auto" muted playsinline '
            f'width="{3 * mp4.WIDTH}" height="{3 * mp4.HEIGHT}"></video>'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    page = directory / "index.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>kling-local videos</title>"
        "<style>body{font:14px sans-serif;margin:16px;background:#eee}"
        "figure{display:inline-block;margin:8px}video{image-rendering:pixelated;"
        "background:#000}</style>" + "".join(figures),
        encoding="utf-8",
    )
    return page


@pytest.fixture
def gallery_url(tmp_path: Path, serve_site: SiteServer) -> str:
    write_gallery(tmp_path / "site")
    return f"{serve_site(tmp_path / 'site')}/index.html"


def open_settled(chromium: Chromium, url: str) -> Page:
    page = chromium.open(url)
    states = page.wait_for_videos()
    assert all(state.ready_state >= 2 and state.error is None for state in states), states
    return page


def test_every_video_decodes_its_first_frame_when_page_opened(
    gallery_url: str, page_check: PageCheck
) -> None:
    # Given a page with clips of different variants, lengths and paddings, served over http

    # When Chromium opens it (and a screenshot is written to tests/.artifacts)
    states = page_check(gallery_url, screenshot=SCREENSHOT)

    # Then every video has decoded a frame with no error, at the clip's size and length
    assert [state.src.rsplit("/", 1)[-1] for state in states] == [clip.name for clip in CLIPS]
    for clip, state in zip(CLIPS, states, strict=True):
        assert state.error is None, state
        assert state.ready_state >= 2, state
        assert (state.width, state.height) == (mp4.WIDTH, mp4.HEIGHT)
        assert state.duration == pytest.approx(clip.seconds)


def test_every_video_decodes_when_page_opened_from_disk(
    tmp_path: Path, page_check: PageCheck
) -> None:
    # Given the page and its clips in a directory, as the local runner's --out gallery is kept
    page = write_gallery(tmp_path / "files")

    # When Chromium opens the file itself
    states = page_check(page.as_uri())

    # Then every video has decoded a frame with no error
    assert len(states) == len(CLIPS)
    assert all(state.ready_state >= 2 and state.error is None for state in states), states


def test_decoded_frames_show_each_variant_when_read_back(
    gallery_url: str, chromium: Chromium
) -> None:
    # Given the page open with every video on its first frame
    page = open_settled(chromium, gallery_url)
    try:
        # When the browser reads the code band of each decoded frame
        codes = page.evaluate(_READ_CODES_JS)
    finally:
        page.close()

    # Then each video shows its own variant: what a viewer sees tells the jobs apart
    assert codes == [clip.variant for clip in CLIPS]


def test_seeking_into_predicted_frames_shows_moved_square_when_seeked_mid_clip(
    gallery_url: str, chromium: Chromium
) -> None:
    # Given the page open, and where the square is 3 s in (frame 36, a P frame after an IDR)
    page = open_settled(chromium, gallery_url)
    frame = 36
    x, y, size, _ = mp4.pictures.square_rect(frame)
    first_x = mp4.pictures.square_rect(0)[0]
    try:
        # When every video seeks there (mid-frame, so rounding picks frame 36)
        landed = page.evaluate(_seek_all_js((frame + 0.5) / mp4.FPS), await_promise=True)
        states = page.wait_for_videos()
        square = page.evaluate(_pixel_js(x + size // 2, y + size // 2))
        start = page.evaluate(_pixel_js(first_x + size // 2, y + size // 2))
        page.screenshot(ARTIFACTS / SEEK_SCREENSHOT)
    finally:
        page.close()

    # Then each decoded the predicted frame: the square is white where it moved to, and gone
    # from where it started (skipped blocks were restored, not left as a trail)
    assert landed == [pytest.approx((frame + 0.5) / mp4.FPS)] * len(CLIPS)
    assert all(state.ready_state >= 2 and state.error is None for state in states), states
    assert all(min(rgb) > 220 for rgb in square), square
    assert all(min(rgb) < 200 for rgb in start), start
