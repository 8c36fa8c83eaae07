"""The browser harness fails fast and says why when there is no usable Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.harness import BrowserError, Chromium


def test_harness_names_make_target_when_chromium_missing(tmp_path: Path) -> None:
    # Given no browser at the configured path / When starting one / Then the fix is named
    with pytest.raises(BrowserError, match="make chromium"):
        Chromium(executable=tmp_path / "chromium")


def test_harness_reports_exit_when_browser_dies_at_start(tmp_path: Path) -> None:
    # Given a "browser" that exits at once with status 3
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    log = tmp_path / "chromium.log"

    # When a page is opened in it
    browser = Chromium(executable=fake, log=log)
    try:
        with pytest.raises(BrowserError) as failure:
            browser.open("about:blank")
    finally:
        browser.close()

    # Then the error says the browser exited and where its log is, instead of hanging
    assert "Chromium exited" in str(failure.value)
    assert str(log) in str(failure.value)
