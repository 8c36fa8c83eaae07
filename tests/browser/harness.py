"""Drives the system's headless Chromium over the DevTools protocol to check pages with videos.

The protocol runs over ``--remote-debugging-pipe`` (NUL-separated JSON on the browser's file
descriptors 3 and 4), so the harness needs nothing beyond the standard library and Debian's
``chromium`` package: no WebSocket client, no Playwright driver, no downloaded browser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "run `make chromium` (installs Debian's chromium package; .ci/run does it)"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)
# Chromium reads commands on fd 3 and answers on fd 4. A tiny Python exec trampoline moves our
# pipe ends there (fork-safe, unlike preexec_fn; sh cannot redirect descriptors above 9).
_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)
# A guard against a hung browser, not a performance bound.
DEFAULT_TIMEOUT_S = 60.0

_VIDEO_STATES_JS = """
Array.from(document.querySelectorAll('video')).map((v) => ({
  src: v.currentSrc || v.getAttribute('src') || '',
  readyState: v.readyState,
  error: v.error ? `${v.error.code} ${v.error.message}` : null,
  width: v.videoWidth,
  height: v.videoHeight,
  duration: Number.isFinite(v.duration) ? v.duration : null,
}))
"""


class BrowserError(RuntimeError):
    """The browser could not be started, or answered a command with an error."""


@dataclass(frozen=True)
class VideoState:
    """What a page's ``<video>`` element reports (HTMLMediaElement properties)."""

    src: str
    ready_state: int
    error: str | None
    width: int
    height: int
    duration: float | None

    @property
    def settled(self) -> bool:
        """Decoded its current frame (HAVE_CURRENT_DATA or better) or failed for good."""
        return self.ready_state >= 2 or self.error is not None


class Chromium:
    """One headless browser process and its DevTools connection; use as a context manager."""

    def __init__(self, executable: Path = CHROMIUM, log: Path | None = None) -> None:
        if not executable.is_file():
            raise BrowserError(f"Chromium not found at {executable}: {INSTALL_HINT}")
        self._profile = tempfile.mkdtemp(prefix="kling-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        log_handle: IO[bytes] | int = log.open("wb") if log else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(commands_read), str(replies_write),
                 str(executable), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log_handle, stderr=log_handle,
                pass_fds=(commands_read, replies_write), start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(commands_read)
            os.close(replies_write)
            if not isinstance(log_handle, int):
                log_handle.close()
        self._log = log or "no log kept"
        self._gone = False
        self._next_id = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read_replies(self) -> None:
        buffer = b""
        with os.fdopen(self._replies, "rb", buffering=0) as replies:
            while chunk := replies.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    self._dispatch(json.loads(raw))
        # The browser is gone: answer every pending command now instead of at its timeout.
        with self._lock:
            self._gone = True
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.put({"error": self._exit_reason()})

    def _exit_reason(self) -> str:
        return f"Chromium exited (exit status {self._process.poll()}); see {self._log}"

    def _dispatch(self, message: dict[str, Any]) -> None:
        with self._lock:
            waiter = self._waiting.pop(message["id"], None) if "id" in message else None
        if waiter is not None:
            waiter.put(message)
        elif "method" in message:
            self._events.put(message)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send one command and return its result; a protocol error raises BrowserError."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        with self._lock:
            self._next_id += 1
            message: dict[str, Any] = {
                "id": self._next_id,
                "method": method,
                "params": params or {},
            }
            if session:
                message["sessionId"] = session
            if self._gone:
                raise BrowserError(f"{method}: {self._exit_reason()}")
            self._waiting[self._next_id] = reply
        try:
            os.write(self._commands, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"{method}: {self._exit_reason()}") from None
        try:
            answer = reply.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no answer within {timeout} s") from None
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def wait_event(self, method: str, session: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Block until ``method`` is reported for ``session`` (earlier other events are dropped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                break
            if event["method"] == method and event.get("sessionId") == session:
                return
        raise BrowserError(f"no {method} within {timeout} s")

    def open(self, url: str, width: int = 1200, height: int = 800) -> Page:
        """A new tab showing ``url`` once its load event has fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, target, session["sessionId"])
        page.call("Page.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", page.session)
        return page

    def close(self) -> None:
        """Ask the browser to quit; kill its process group if it does not."""
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        with contextlib.suppress(OSError):
            os.close(self._commands)
        shutil.rmtree(self._profile, ignore_errors=True)


@dataclass(frozen=True)
class Page:
    """One attached tab."""

    browser: Chromium
    target: str
    session: str

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def close(self) -> None:
        """Close the tab."""
        self.browser.call("Target.closeTarget", {"targetId": self.target})

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def video_states(self) -> list[VideoState]:
        return [
            VideoState(
                src=item["src"],
                ready_state=item["readyState"],
                error=item["error"],
                width=item["width"],
                height=item["height"],
                duration=item["duration"],
            )
            for item in self.evaluate(_VIDEO_STATES_JS)
        ]

    def wait_for_videos(self, timeout: float = DEFAULT_TIMEOUT_S) -> list[VideoState]:
        """Every video's state once all have decoded a frame or failed (or the guard expires)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.video_states()
            if all(state.settled for state in states) or time.monotonic() > deadline:
                return states
            time.sleep(0.1)

    def screenshot(self, target: Path) -> Path:
        """Write a PNG of the whole page (after the next two paints, so frames are on screen)."""
        self.evaluate(
            "new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))",
            await_promise=True,
        )
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(shot["data"]))
        return target
