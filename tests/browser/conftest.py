"""Browser fixtures: a headless Chromium for the session, a static site server, a page check."""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.browser.harness import CHROMIUM, INSTALL_HINT, Chromium, VideoState
from tests.conftest import ROOT, ServerStarter

#: Screenshots and the browser log land here (gitignored), for people to look at.
ARTIFACTS = ROOT / "tests" / ".artifacts"

SiteServer = Callable[[Path], str]


class PageCheck(Protocol):
    """Opens ``url``, waits for its videos, optionally saves ``screenshot`` under ARTIFACTS."""

    def __call__(self, url: str, screenshot: str | None = None) -> list[VideoState]: ...


class _StaticFiles(SimpleHTTPRequestHandler):
    """Static files plus single byte ranges: without them a media element cannot seek."""

    def do_GET(self) -> None:
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if wanted is None or not path.is_file():
            super().do_GET()
            return
        size = path.stat().st_size
        start = int(wanted[1])
        end = min(int(wanted[2]) if wanted[2] else size - 1, size - 1)
        if start > end:
            self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            return
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with path.open("rb") as source:
            source.seek(start)
            shutil.copyfileobj(source, self.wfile, length=end - start + 1)

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """The system Chromium, headless. Missing is a failure, never a skip: CI must run this."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Chromium(log=ARTIFACTS / "chromium.log") as browser:
        yield browser


@pytest.fixture
def serve_site(http_servers: ServerStarter) -> SiteServer:
    """Serves a directory over http on 127.0.0.1 (byte ranges included); returns its base URL."""

    def serve(directory: Path) -> str:
        handler = functools.partial(_StaticFiles, directory=str(directory))
        return f"http://{http_servers(ThreadingHTTPServer(('127.0.0.1', 0), handler))}"

    return serve


@pytest.fixture
def page_check(chromium: Chromium) -> PageCheck:
    """``page_check(url, screenshot=None)``: open the page, wait until every ``<video>`` has
    decoded a frame or failed, optionally save a screenshot under tests/.artifacts, and return
    the videos' states."""

    def check(url: str, screenshot: str | None = None) -> list[VideoState]:
        page = chromium.open(url)
        try:
            states = page.wait_for_videos()
            if screenshot:
                page.screenshot(ARTIFACTS / screenshot)
            return states
        finally:
            page.close()

    return check
