"""Safe, bounded-memory streaming of a generated video from its output URL into S3."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import queue
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError

from .errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, TagTypeDef

METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
READ_CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class RefusedUrl(PermanentError):
    """An output URL the download policy does not allow; nothing was requested from it."""

    default_code = "output_url_refused"


@dataclass(frozen=True)
class DownloadPolicy:
    """Where outputs may come from, and how much of them we accept."""

    allowed_hosts: tuple[str, ...]
    local_hosts: tuple[str, ...] = ()
    max_bytes: int = 2 * 1024**3
    timeout_s: float = 30.0
    max_redirects: int = 3


@dataclass(frozen=True)
class Target:
    """A vetted URL: what to connect to, and which name to present for TLS and Host."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped, 6to4 and NAT64 addresses reach the IPv4 address they embed (a NAT64
        # gateway will happily forward to 10.x), so that address is the one to judge.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in NAT64_WELL_KNOWN:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in NAT64_LOCAL_USE:
            return False
    return ip.is_global and ip != METADATA_ADDRESS and not ip.is_multicast


def vet_url(url: str, policy: DownloadPolicy, resolver: Resolver = system_resolver) -> Target:
    """Refuses anything but https to an allow-listed host resolving to public addresses only.

    The connection later goes to the vetted address (with the host name kept for TLS), so a
    DNS answer that changes between check and use cannot redirect the download.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedUrl(f"output URL has no host: {url[:200]}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedUrl(f"output URL has a bad port: {url[:200]}") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if f"{host}:{port}" in policy.local_hosts and parts.scheme in ("http", "https"):
        return Target(parts.scheme, host, port, path, host)
    if parts.scheme != "https":
        raise RefusedUrl(f"output URL must use https, got {parts.scheme or 'none'}: {host}")
    if not any(fnmatch(host, pattern.lower()) for pattern in policy.allowed_hosts):
        raise RefusedUrl(f"output host {host} is not on the allow-list")
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise TransientError(f"could not resolve {host}: {exc}", code="dns_failure") from None
    if not addresses:
        raise TransientError(f"{host} resolved to no address", code="dns_failure")
    refused = [address for address in addresses if not _is_public(address)]
    if refused:
        raise RefusedUrl(f"output host {host} resolves to a non-public address {refused[0]}")
    return Target("https", host, port, path, addresses[0])


def looks_like_mp4(head: bytes) -> bool:
    """An ISO-BMFF file starts with an `ftyp` box of a sane size."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return False
    size = int.from_bytes(head[:4], "big")
    return size == 1 or 8 <= size <= 4096


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str


class _Interrupted(Exception):
    """The body ended early or the connection dropped: resumable."""


class VideoCopier:
    """Streams a URL into an S3 multipart upload: parts upload while the next one downloads."""

    def __init__(
        self,
        s3: S3Client,
        policy: DownloadPolicy,
        *,
        part_bytes: int = 8 * 1024 * 1024,
        concurrency: int = 4,
        attempts: int = 3,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._s3 = s3
        self._policy = policy
        self._part_bytes = part_bytes
        self._concurrency = concurrency
        self._attempts = attempts
        self._resolver = resolver
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}

    def _pool(self, target: Target) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.address, target.port, target.host)
        pool = self._pools.get(key)
        if pool is None:
            timeout = urllib3.Timeout(connect=10.0, read=self._policy.timeout_s)
            if target.scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    target.address,
                    target.port,
                    server_hostname=target.host,
                    assert_hostname=target.host,
                    cert_reqs="CERT_REQUIRED",
                    timeout=timeout,
                    maxsize=4,
                )
            else:
                pool = urllib3.HTTPConnectionPool(
                    target.address, target.port, timeout=timeout, maxsize=4
                )
            self._pools[key] = pool
        return pool

    def _open(self, url: str, offset: int) -> urllib3.BaseHTTPResponse:
        """GETs `url`, vetting it and every redirect before any request is sent there."""
        for _ in range(self._policy.max_redirects + 1):
            target = vet_url(url, self._policy, self._resolver)
            headers = {"Host": target.host_header, "User-Agent": "kling-pipeline/1"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                response = self._pool(target).urlopen(
                    "GET",
                    target.path,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                )
            except HTTPError as exc:
                raise _Interrupted(f"{type(exc).__name__}: {exc}") from None
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location", "")
                _discard(response)
                url = urljoin(url, location)
                continue
            if response.status in (200, 206):
                return response
            response.drain_conn()
            if response.status in (404, 410):
                raise PermanentError(
                    f"output is gone (HTTP {response.status})", code="output_missing"
                )
            if response.status >= 500 or response.status == 429:
                raise _Interrupted(f"HTTP {response.status}")
            raise PermanentError(
                f"output download refused (HTTP {response.status})", code="download_failed"
            )
        raise RefusedUrl(f"more than {self._policy.max_redirects} redirects")

    def _open_from(self, url: str, offset: int) -> tuple[urllib3.BaseHTTPResponse, bool]:
        """GETs `url` from `offset`; the flag is False when the body starts at byte 0 instead."""
        response = self._open(url, offset)
        if not offset or _resumes_at(response, offset):
            return response, True
        if response.status == 206:
            # Another range than asked (block-aligned, or unlabelled): fetch the whole body.
            _discard(response)
            response = self._open(url, 0)
        return response, False

    def copy(self, url: str, bucket: str, key: str, *, tagging: str = "") -> StoredObject:
        """Copies one output; on any failure the multipart upload is aborted, never left behind.

        Bytes flow through a fixed set of part-sized buffers: while one fills from the network,
        earlier parts upload concurrently and a second thread hashes them in order, so memory
        stays at (concurrency + 1) parts whatever the file size.
        """
        upload = _Upload(self._s3, bucket, key, tagging, self._concurrency, self._part_bytes)
        try:
            expected: int | None = None
            failures = 0
            while True:
                try:
                    response, resumed = self._open_from(url, upload.received)
                    if not resumed:
                        # Appending would duplicate or shift bytes: start over from byte 0.
                        upload.restart()
                        expected = None
                    length = response.headers.get("Content-Length")
                    if expected is None and length is not None:
                        expected = int(length) + upload.received
                        if expected > self._policy.max_bytes:
                            _discard(response)
                            raise PermanentError(
                                f"output is {expected} bytes, over the "
                                f"{self._policy.max_bytes}-byte limit",
                                code="output_too_large",
                            )
                    for chunk in _chunks(response):
                        upload.write(chunk)
                        if upload.received > self._policy.max_bytes:
                            raise PermanentError(
                                "output exceeds the size limit", code="output_too_large"
                            )
                    if expected is not None and upload.received != expected:
                        raise _Interrupted(f"body ended at {upload.received} of {expected} bytes")
                    break
                except _Interrupted as exc:
                    failures += 1
                    if failures >= self._attempts:
                        raise PermanentError(
                            f"download kept failing after {failures} attempts: {exc}",
                            code="download_incomplete",
                        ) from None
            digest = upload.complete()
            return StoredObject(bucket, key, upload.received, digest)
        finally:
            upload.abort_unless_complete()


def _resumes_at(response: urllib3.BaseHTTPResponse, offset: int) -> bool:
    """Whether a ranged answer's body starts exactly at `offset` (per its Content-Range)."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return response.status == 206 and match is not None and int(match.group(1)) == offset


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Gives up on a response's body. Its connection is closed, not pooled: the unread bytes
    still on the wire would otherwise be read as the answer to the next request."""
    response.close()
    response.release_conn()


def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    complete = False
    try:
        yield from response.stream(READ_CHUNK)
        complete = True
    except HTTPError as exc:
        raise _Interrupted(f"{type(exc).__name__}") from None
    finally:
        if complete:
            response.release_conn()
        else:
            _discard(response)


class _ViewReader(io.RawIOBase):
    """A seekable, read-only file over part of a reused buffer: botocore streams and checksums
    it without the copy a `bytes(...)` slice would cost."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        count = min(len(target), len(self._view) - self._position)
        target[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view)


class _Upload:
    """One S3 multipart upload fed through reusable buffers, parts uploading concurrently."""

    def __init__(
        self, s3: S3Client, bucket: str, key: str, tagging: str, concurrency: int, part_bytes: int
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._tagging = tagging
        self._concurrency = concurrency
        self._part_bytes = part_bytes
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._buffers = 0
        self._current: bytearray | None = None
        self._filled = 0
        self._uploads: ThreadPoolExecutor | None = None
        self._hashing: ThreadPoolExecutor | None = None
        self._inflight: list[Future[CompletedPartTypeDef]] = []
        self._hash_tail: Future[None] | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._hasher = hashlib.sha256()
        self._upload_id: str | None = None
        self._next_part = 1
        self._checked = False
        self._done = False
        self.received = 0

    def _buffer(self) -> bytearray:
        """A free buffer; blocks while every buffer is still uploading (the memory bound)."""
        if self._buffers <= self._concurrency and self._free.empty():
            self._buffers += 1
            return bytearray(self._part_bytes)
        # Every part in flight hands its buffer back when done, failed or not: this wakes up.
        buffer = self._free.get()
        self._reap()  # a failed part fails the copy now, not at the end
        return buffer

    def write(self, chunk: bytes) -> None:
        """Appends downloaded bytes; full buffers are handed off as parts."""
        data = memoryview(chunk)
        while data:
            if self._current is None:
                self._current, self._filled = self._buffer(), 0
            room = self._part_bytes - self._filled
            piece = data[:room]
            self._current[self._filled : self._filled + len(piece)] = piece
            self._filled += len(piece)
            self.received += len(piece)
            data = data[len(piece) :]
            if not self._checked and self._next_part == 1 and self._filled >= 12:
                if not looks_like_mp4(bytes(self._current[:12])):
                    raise PermanentError("output is not an MP4 (no ftyp box)", code="not_mp4")
                self._checked = True
            if self._filled == self._part_bytes:
                self._ship()

    def _ship(self) -> None:
        assert self._current is not None
        buffer, size = self._current, self._filled
        self._current, self._filled = None, 0
        if self._upload_id is None:
            extra: dict[str, Any] = {"Tagging": self._tagging} if self._tagging else {}
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType="video/mp4", **extra
            )["UploadId"]
        if self._uploads is None:
            self._uploads = ThreadPoolExecutor(self._concurrency, thread_name_prefix="part")
            self._hashing = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        assert self._hashing is not None
        view = memoryview(buffer)[:size]
        # One hashing thread keeps the parts in order; hashlib releases the GIL meanwhile.
        hashed = self._hashing.submit(self._hasher.update, view)
        self._hash_tail = hashed
        number = self._next_part
        self._next_part += 1
        self._inflight.append(
            self._uploads.submit(self._send, self._upload_id, number, buffer, view, hashed)
        )

    def _send(
        self,
        upload_id: str,
        number: int,
        buffer: bytearray,
        view: memoryview,
        hashed: Future[None],
    ) -> CompletedPartTypeDef:
        try:
            answer = self._s3.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                Body=cast(IO[bytes], _ViewReader(view)),
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}
        finally:
            try:
                hashed.exception()  # the buffer is reused only once the hash has read it too
            finally:
                self._free.put(buffer)

    def _reap(self) -> None:
        """Collects finished parts; a failed part fails the copy."""
        still: list[Future[CompletedPartTypeDef]] = []
        for future in self._inflight:
            if future.done():
                self._parts.append(future.result())
            else:
                still.append(future)
        self._inflight = still

    def complete(self) -> str:
        """Uploads the last part, completes the upload, tags it; returns the sha256."""
        if not self._checked:
            raise PermanentError("output is not an MP4 (too short)", code="not_mp4")
        if self._current is not None and self._filled:
            self._ship()
        for future in self._inflight:
            self._parts.append(future.result())
        self._inflight = []
        if self._hash_tail is not None:
            self._hash_tail.result()
        assert self._upload_id is not None
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda part: part["PartNumber"])},
        )
        self._done = True
        digest = self._hasher.hexdigest()
        tags: list[TagTypeDef] = [{"Key": "sha256", "Value": digest}]
        for pair in filter(None, self._tagging.split("&")):
            name, _, value = pair.partition("=")
            tags.append({"Key": unquote(name), "Value": unquote(value)})
        self._s3.put_object_tagging(Bucket=self._bucket, Key=self._key, Tagging={"TagSet": tags})
        return digest

    def restart(self) -> None:
        """Forgets everything sent so far (the server could not resume): start from byte 0."""
        self.abort_unless_complete()
        self._parts = []
        self._hasher = hashlib.sha256()
        self._hash_tail = None
        self._next_part = 1
        self._checked = False
        self._current, self._filled = None, 0
        self.received = 0

    def abort_unless_complete(self) -> None:
        # Parts still uploading would be stored after the abort: wait for them first.
        for future in self._inflight:
            future.cancel()
        for future in self._inflight:
            if not future.cancelled():
                future.exception()  # waits; the part's outcome no longer matters
        self._inflight = []
        if self._upload_id is not None and not self._done:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
            self._upload_id = None
        for pool in (self._uploads, self._hashing):
            if pool is not None:
                pool.shutdown(wait=True)
        self._uploads = self._hashing = None
