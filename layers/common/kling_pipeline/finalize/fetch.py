"""Downloading one output: vetted connections and a resumable reader that verifies what it reads."""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import HTTPError

from ..errors import PermanentError, TransientError
from ..media import MP4_HEAD_BYTES, looks_like_mp4
from .digest import BackgroundHasher
from .policy import DownloadPolicy, RefusedUrl, Resolver, Target, system_resolver, vet_url

READ_CHUNK = 1024 * 1024
#: Bytes handed to the hashing thread at a time: few hand-offs, and a short wait at the end of
#: a read for the hash to catch up.
HASH_BATCH = 1024 * 1024
#: New bytes between two cuts that count as progress: the attempts count starts again.
PROGRESS_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_DIGITS = re.compile(r"\d{1,19}")
Clock = Callable[[], float]


class Interrupted(Exception):
    """The body ended early, the connection dropped or the answer was unusable: resumable."""


class OutputFetcher:
    """Opens output URLs under a download policy, reusing connections per vetted address."""

    def __init__(self, policy: DownloadPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self._resolver = resolver
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}

    def _pool(self, target: Target) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.address, target.port, target.host)
        pool = self._pools.get(key)
        if pool is None:
            if target.scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    target.address,
                    target.port,
                    server_hostname=target.host,
                    assert_hostname=target.host,
                    cert_reqs="CERT_REQUIRED",
                    maxsize=4,
                )
            else:
                pool = urllib3.HTTPConnectionPool(target.address, target.port, maxsize=4)
            self._pools[key] = pool
        return pool

    def open(
        self, url: str, offset: int, seconds_left: float, if_range: str | None = None
    ) -> urllib3.BaseHTTPResponse:
        """GETs `url` from `offset`, vetting it and every redirect before anything is sent there.

        `if_range` (the validator of the first answer) makes a server whose output changed
        since send the whole new body rather than the rest of it: bytes of two versions are
        never joined, the replayed start shows the change.

        No socket wait may outlast `seconds_left`, so the caller's deadline holds even when the
        server stalls; content is never decoded (an MP4 is sent as is, and decoding is where
        decompression bombs live).
        """
        timeout = urllib3.Timeout(
            connect=max(0.1, min(CONNECT_TIMEOUT_S, seconds_left)),
            read=max(0.1, min(self.policy.timeout_s, seconds_left)),
        )
        for _ in range(self.policy.max_redirects + 1):
            target = vet_url(url, self.policy, self._resolver)
            headers = {
                "Host": target.host_header,
                "User-Agent": "kling-pipeline/1",
                "Accept-Encoding": "identity",
            }
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if if_range:
                    headers["If-Range"] = if_range
            try:
                response = self._pool(target).urlopen(
                    "GET",
                    target.path,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=False,
                    assert_same_host=False,
                    timeout=timeout,
                )
            except HTTPError as exc:
                raise Interrupted(f"{type(exc).__name__}: {exc}") from None
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location", "")
                discard(response)
                url = urljoin(url, location)
                continue
            if response.status in (200, 206):
                return response
            discard(response)
            if response.status in (404, 410):
                raise PermanentError(
                    f"output is gone (HTTP {response.status})", code="output_missing"
                )
            if response.status >= 500 or response.status == 429:
                raise Interrupted(f"HTTP {response.status}")
            raise PermanentError(
                f"output download refused (HTTP {response.status})", code="download_failed"
            )
        raise RefusedUrl(f"more than {self.policy.max_redirects} redirects")

    def reader(
        self, url: str, *, attempts: int = 3, clock: Clock = time.monotonic
    ) -> VerifiedReader:
        return VerifiedReader(self, url, attempts=attempts, clock=clock)


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Gives up on a response's body. Its connection is closed, not pooled: the unread bytes
    still on the wire would otherwise be read as the answer to the next request."""
    response.close()
    response.release_conn()


def content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    """The announced body length; a malformed header is an unusable answer, not a crash."""
    raw = response.headers.get("Content-Length")
    if raw is None:
        return None
    # Repeated headers arrive joined by commas; identical values are allowed (RFC 9110 8.6).
    values = {value.strip() for value in raw.split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise Interrupted(f"malformed Content-Length {raw[:40]!r}")
    return int(values.pop())


def validator(response: urllib3.BaseHTTPResponse) -> str | None:
    """What `If-Range` may name for this answer: a strong ETag, else its Last-Modified date
    (RFC 9110 13.1.5: a weak ETag never validates a range)."""
    etag = (response.headers.get("ETag") or "").strip()
    if etag.startswith('"') and etag.endswith('"') and len(etag) >= 2:
        return etag
    modified = (response.headers.get("Last-Modified") or "").strip()
    return modified or None


def range_start(response: urllib3.BaseHTTPResponse) -> tuple[int, int | None] | None:
    """(first byte, total) of a 206 answer per its Content-Range, None when unlabelled."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if response.status != 206 or match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


class VerifiedReader(io.RawIOBase):
    """A non-seekable file over one output: hashes in order, checks the MP4 signature and the
    size, and resumes a dropped download with `Range` without ever repeating or shifting a byte.

    A server that cannot resume sends the body from byte 0 again: the bytes already passed on
    are read again, checked against their SHA-256 and skipped. Reads always fill the buffer
    given until the end of the output (S3 multipart parts must be full-sized).

    The SHA-256 is computed on a thread of its own while the next bytes arrive; a read
    returns only once the hash has caught up with it, so the caller owns its buffer again.
    """

    def __init__(self, fetcher: OutputFetcher, url: str, *, attempts: int, clock: Clock) -> None:
        super().__init__()
        self._fetcher = fetcher
        self._policy = fetcher.policy
        self._url = url
        self._attempts = attempts
        self._clock = clock
        self._deadline = clock() + self._policy.deadline_s
        self._hasher = BackgroundHasher()
        self._head = b""
        self._response: urllib3.BaseHTTPResponse | None = None
        self._expected: int | None = None
        self._failures = 0
        self._cut_at = 0  # bytes passed on at the last cut: progress since resets the count
        self._validator: str | None = None
        self._finished = False
        self.received = 0

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, target: Any) -> int:
        """Fills `target` with the next bytes (fewer only at the end); 0 once the output ended."""
        view = memoryview(target).cast("B")
        count = hashed = 0
        try:
            while count < len(view) and not self._finished:
                piece = self._next_chunk(min(READ_CHUNK, len(view) - count))
                view[count : count + len(piece)] = piece
                count += len(piece)
                # No piece means a resume or the end comes next: a resume checks the replayed
                # bytes against the hash of all passed on, so all must be fed by then.
                if count - hashed >= HASH_BATCH or not piece:
                    self._hasher.feed(view[hashed:count])
                    hashed = count
            self._hasher.feed(view[hashed:count])
        finally:
            # Failing or not, nothing may read `target` once it is the caller's again.
            self._hasher.settle()
        return count

    def close(self) -> None:
        if self._response is not None:
            discard(self._response)
            self._response = None
        self._hasher.close()
        super().close()

    def _seconds_left(self) -> float:
        left = self._deadline - self._clock()
        if left <= 0:
            size = f" of {self._expected}" if self._expected is not None else ""
            raise TransientError(
                f"output download did not finish within {self._policy.deadline_s:g} s "
                f"({self.received}{size} bytes received)",
                code="download_deadline",
            )
        return left

    def _next_chunk(self, limit: int) -> bytes:
        """Up to `limit` new bytes (b"" when a resume is needed or the output has ended)."""
        try:
            if self._response is None:
                self._response = self._resume()
            piece = self._response.read1(limit) if limit else b""
        except (HTTPError, OSError) as exc:
            self._interrupted(Interrupted(f"{type(exc).__name__}"))
            return b""
        except Interrupted as exc:
            self._interrupted(exc)
            return b""
        self._seconds_left()
        if not piece:
            self._end_of_body()
            return b""
        self._accept(piece)
        return piece

    def _accept(self, piece: bytes) -> None:
        if len(self._head) < MP4_HEAD_BYTES:
            self._head += piece[: MP4_HEAD_BYTES - len(self._head)]
            if len(self._head) == MP4_HEAD_BYTES and not looks_like_mp4(self._head):
                raise PermanentError("output is not an MP4 (no ftyp box)", code="not_mp4")
        self.received += len(piece)
        if self.received > self._policy.max_bytes:
            raise PermanentError("output exceeds the size limit", code="output_too_large")

    def _end_of_body(self) -> None:
        assert self._response is not None
        if self._expected is not None and self.received != self._expected:
            self._interrupted(
                Interrupted(f"body ended at {self.received} of {self._expected} bytes")
            )
            return
        self._response.release_conn()
        self._response = None
        if len(self._head) < MP4_HEAD_BYTES:
            raise PermanentError("output is not an MP4 (too short)", code="not_mp4")
        self._finished = True

    def _interrupted(self, exc: Interrupted) -> None:
        if self._response is not None:
            discard(self._response)
            self._response = None
        if self.received - self._cut_at >= PROGRESS_BYTES:
            # Advancing despite cuts (a poor network): go on, within the per-output deadline.
            self._failures = 0
        self._cut_at = self.received
        self._failures += 1
        if self._failures >= self._attempts:
            raise PermanentError(
                f"download kept failing after {self._failures} attempts: {exc}",
                code="download_incomplete",
            ) from None

    def _resume(self) -> urllib3.BaseHTTPResponse:
        """Opens the output where the bytes passed on so far end."""
        response = self._fetcher.open(
            self._url, self.received, self._seconds_left(), if_range=self._validator
        )
        if not self.received:
            self._validator = validator(response)
        else:
            labelled = range_start(response)
            if labelled is not None and labelled[0] == self.received:
                return self._vetted(response, labelled[1], skip=False)
            if response.status == 206:
                # Another range than asked (block-aligned, or unlabelled): fetch from byte 0.
                discard(response)
                response = self._fetcher.open(self._url, 0, self._seconds_left())
        return self._vetted(response, None, skip=self.received > 0)

    def _vetted(
        self, response: urllib3.BaseHTTPResponse, total: int | None, *, skip: bool
    ) -> urllib3.BaseHTTPResponse:
        """The response, once its size is known to fit and any replayed prefix is verified."""
        try:
            if total is None:
                if response.status == 206:
                    raise Interrupted("answered a plain GET with a partial body")
                total = content_length(response)
            self._check_total(total)
            if skip:
                self._skip_verified(response)
        except BaseException:
            discard(response)
            raise
        return response

    def _check_total(self, total: int | None) -> None:
        if total is None:
            return
        if self._expected is not None and total != self._expected:
            raise TransientError(
                f"output changed during the download ({self._expected} then {total} bytes)",
                code="output_changed",
            )
        if total > self._policy.max_bytes:
            raise PermanentError(
                f"output is {total} bytes, over the {self._policy.max_bytes}-byte limit",
                code="output_too_large",
            )
        self._expected = total

    def _skip_verified(self, response: urllib3.BaseHTTPResponse) -> None:
        """Reads past the bytes already passed on, proving they are the same bytes."""
        assert self._hasher.fed == self.received, "resumed before every byte passed on was hashed"
        again = hashlib.sha256()
        left = self.received
        while left:
            piece = response.read1(min(READ_CHUNK, left))
            if not piece:
                raise Interrupted(f"body ended {left} bytes before the resume point")
            again.update(piece)
            left -= len(piece)
            self._seconds_left()
        if again.digest() != self._hasher.digest():
            raise TransientError(
                "output changed during the download (its first bytes differ)",
                code="output_changed",
            )
