"""The local runner's `--out` gallery in headless Chromium: every job shown, every video decodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kling_local import runner
from tests.browser.conftest import ARTIFACTS, PageCheck, SiteServer
from tests.browser.harness import Chromium

SCREENSHOT = "gallery.png"
#: One job that completes, one the simulator fails on purpose, one invalid message.
MESSAGES = (
    {"prompt": "A red fox trots across a snowy meadow", "job_id": "fox-completed"},
    {"prompt": "A lighthouse in a storm [sim:fail]", "job_id": "storm-failed"},
    {"prompt": "A cat on a sofa", "job_id": "cat-rejected", "aspect_ratio": "4:3"},
)
EXPECTED = {"fox-completed": "completed", "storm-failed": "failed", "cat-rejected": "rejected"}

_CARDS_JS = """
Array.from(document.querySelectorAll('article.job')).map((card) => ({
  status: card.dataset.status,
  job: card.querySelector('h2 span:last-child').textContent,
  videos: card.querySelectorAll('video').length,
  text: card.innerText,
}))
"""


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-job local run exported with `--out`, exactly as a user runs it."""
    work = tmp_path_factory.mktemp("gallery-run")
    messages = work / "messages.jsonl"
    messages.write_text("".join(json.dumps(m) + "\n" for m in MESSAGES), encoding="utf-8")
    out = work / "out"
    code = runner.main(
        ["--messages", str(messages), "--out", str(out), "--quiet", "--generation-seconds", "0.5"]
    )
    assert code == 0
    return out


def test_gallery_shows_every_job_and_decodes_its_video_when_served(
    run_out: Path, serve_site: SiteServer, chromium: Chromium
) -> None:
    # Given the run's --out folder served over http
    url = f"{serve_site(run_out)}/index.html"

    # When Chromium opens the gallery and every video settles
    page = chromium.open(url, width=1280, height=720)
    try:
        states = page.wait_for_videos()
        shown = page.evaluate(_CARDS_JS)
        page.screenshot(ARTIFACTS / SCREENSHOT)
    finally:
        page.close()

    # Then there is one card per job of the run, with its status
    assert {card["job"]: card["status"] for card in shown} == EXPECTED
    # and the one video (the completed job's) decoded its first frame from the copied file
    assert len(states) == 1
    assert states[0].src == f"{url.rsplit('/', 1)[0]}/videos/fox-completed/output-1.mp4"
    assert states[0].error is None and states[0].ready_state >= 2, states
    # and the jobs without a video say why
    by_job = {card["job"]: card for card in shown}
    assert by_job["storm-failed"]["videos"] == 0
    assert "generation_failed" in by_job["storm-failed"]["text"]
    assert by_job["cat-rejected"]["videos"] == 0
    assert "aspect_ratio" in by_job["cat-rejected"]["text"]
    assert (ARTIFACTS / SCREENSHOT).stat().st_size > 0


def test_gallery_video_decodes_when_opened_from_disk(run_out: Path, page_check: PageCheck) -> None:
    # Given the --out folder as it lies on disk (links are relative, so no server is needed)
    # When Chromium opens index.html as a file
    states = page_check((run_out / "index.html").as_uri())

    # Then the video decodes its first frame
    assert len(states) == 1
    assert states[0].error is None and states[0].ready_state >= 2, states
