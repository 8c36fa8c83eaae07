"""Integration tests: `kling-pipeline gallery` over the local pipeline's jobs table, in moto."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kling_cli.app import main
from kling_local.pipeline import LocalPipeline
from tests.conftest import run
from tests.integration.test_cli import resources_of

#: A completed, a failed (simulator marker) and a rejected (invalid message) job.
MESSAGES = (
    {"prompt": "a red fox in snow", "job_id": "fox-ok", "metadata": {"by": "<b>me</b>"}},
    {"prompt": "a storm at sea [sim:fail]", "job_id": "storm-fail"},
    {"prompt": "a cat", "job_id": "bad-duration", "duration": 7},
)


class Cards(HTMLParser):
    """Each job card's status and job id, and every video's src."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.statuses: list[str] = []
        self.videos: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "article":
            self.statuses.append(found.get("data-status") or "")
        if tag == "video":
            self.videos.append(found.get("src") or "")


def cards(page: Path) -> Cards:
    parsed = Cards()
    parsed.feed(page.read_text(encoding="utf-8"))
    return parsed


@pytest.fixture
def ended(pipeline: LocalPipeline) -> LocalPipeline:
    """The pipeline after the three jobs reached their notifications."""
    for message in MESSAGES:
        pipeline.send_message(json.dumps(message))
    result = run(pipeline)
    assert {n["job_id"]: n["status"] for n in result.notifications} == {
        "fox-ok": "completed",
        "storm-fail": "failed",
        "bad-duration": "rejected",
    }
    return pipeline


def gallery(pipeline: LocalPipeline, out: Path, *options: str) -> tuple[int, Cards]:
    code = main(["gallery", "--out", str(out), *options], resources=resources_of(pipeline))
    return code, cards(out)


def test_gallery_shows_every_job_with_video_link_or_reason_when_jobs_ended(
    ended: LocalPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a completed, a failed and a rejected job in the jobs table
    page = tmp_path / "gallery.html"

    # When the user writes the gallery
    code, parsed = gallery(ended, page)

    # Then one card per job, and the one video is the completed job's presigned https link
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(parsed.statuses) == ["completed", "failed", "rejected"]
    assert len(parsed.videos) == 1
    assert parsed.videos[0].startswith(f"https://{ended.videos_bucket}.s3.amazonaws.com/")
    assert "videos/fox-ok/output-1.mp4?" in parsed.videos[0]
    # and the reasons, cost and generation time are shown, the metadata escaped
    text = page.read_text(encoding="utf-8")
    assert "generation_failed" in text
    assert "invalid_job" in text and "duration" in text
    assert "$1.30 (charged)" in text and "$0.00 (not charged)" in text
    assert "generation (s)" in text
    assert "&lt;b&gt;me&lt;/b&gt;" in text and "<b>me</b>" not in text


def test_gallery_keeps_only_matching_jobs_when_filtered(
    ended: LocalPipeline, tmp_path: Path
) -> None:
    # Given the three ended jobs
    # When the gallery is filtered by state, by count and by age
    _, failed = gallery(ended, tmp_path / "failed.html", "--state", "failed")
    _, two = gallery(ended, tmp_path / "two.html", "--limit", "2")
    _, recent = gallery(ended, tmp_path / "recent.html", "--since", "1h")
    _, future = gallery(ended, tmp_path / "future.html", "--since", "2999-01-01")

    # Then each page holds exactly the jobs asked for
    assert failed.statuses == ["failed"]
    assert len(two.statuses) == 2
    assert sorted(recent.statuses) == ["completed", "failed", "rejected"]
    assert future.statuses == []


def test_gallery_exits_2_and_writes_nothing_when_since_is_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a --since that is neither an age nor a date
    page = tmp_path / "g.html"

    # When the user asks for the gallery (no AWS is reached: the option is checked first)
    code = main(["gallery", "--since", "yesterday", "--out", str(page)])

    # Then a usage error naming the accepted forms, and no page
    assert code == 2
    assert "24h" in capsys.readouterr().err
    assert not page.exists()
