"""Safe, bounded-memory streaming of a generated video from its output URL into S3."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError

from .errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, TagTypeDef

METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
READ_CHUNK = 1024 * 1024
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
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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
                response.release_conn()
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

    def copy(self, url: str, bucket: str, key: str, *, tagging: str = "") -> StoredObject:
        """Copies one output; on any failure the multipart upload is aborted, never left behind."""
        upload = _Upload(self._s3, bucket, key, tagging, self._concurrency)
        try:
            hasher = hashlib.sha256()
            received = 0
            expected: int | None = None
            buffer = bytearray()
            checked = False
            failures = 0
            while True:
                try:
                    response = self._open(url, received)
                    if received and response.status != 206:
                        # The server ignored our Range: start over from the first byte.
                        upload.restart()
                        hasher, received, buffer, checked = hashlib.sha256(), 0, bytearray(), False
                        expected = None
                    length = response.headers.get("Content-Length")
                    if expected is None and length is not None:
                        expected = int(length) + received
                        if expected > self._policy.max_bytes:
                            response.release_conn()
                            raise PermanentError(
                                f"output is {expected} bytes, over the "
                                f"{self._policy.max_bytes}-byte limit",
                                code="output_too_large",
                            )
                    for chunk in _chunks(response):
                        hasher.update(chunk)
                        received += len(chunk)
                        buffer += chunk
                        if received > self._policy.max_bytes:
                            raise PermanentError(
                                "output exceeds the size limit", code="output_too_large"
                            )
                        if not checked and len(buffer) >= 12:
                            if not looks_like_mp4(bytes(buffer[:12])):
                                raise PermanentError(
                                    "output is not an MP4 (no ftyp box)", code="not_mp4"
                                )
                            checked = True
                        while len(buffer) >= self._part_bytes:
                            upload.add_part(bytes(buffer[: self._part_bytes]))
                            del buffer[: self._part_bytes]
                    if expected is not None and received != expected:
                        raise _Interrupted(f"body ended at {received} of {expected} bytes")
                    break
                except _Interrupted as exc:
                    failures += 1
                    if failures >= self._attempts:
                        raise PermanentError(
                            f"download kept failing after {failures} attempts: {exc}",
                            code="download_incomplete",
                        ) from None
            if not checked:
                raise PermanentError("output is not an MP4 (too short)", code="not_mp4")
            if buffer:
                upload.add_part(bytes(buffer))
            digest = hasher.hexdigest()
            upload.complete(digest)
            return StoredObject(bucket, key, received, digest)
        finally:
            upload.abort_unless_complete()


def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    try:
        yield from response.stream(READ_CHUNK)
    except HTTPError as exc:
        raise _Interrupted(f"{type(exc).__name__}") from None
    finally:
        response.release_conn()


class _Upload:
    """One S3 multipart upload with a bounded number of parts in flight."""

    def __init__(self, s3: S3Client, bucket: str, key: str, tagging: str, concurrency: int):
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._tagging = tagging
        self._concurrency = concurrency
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: deque[Future[CompletedPartTypeDef]] = deque()
        self._parts: list[CompletedPartTypeDef] = []
        self._upload_id: str | None = None
        self._done = False

    def _start(self) -> str:
        if self._upload_id is None:
            extra: dict[str, Any] = {"Tagging": self._tagging} if self._tagging else {}
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType="video/mp4", **extra
            )["UploadId"]
        return self._upload_id

    def add_part(self, data: bytes) -> None:
        upload_id = self._start()
        number = len(self._parts) + len(self._inflight) + 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="part")
        while len(self._inflight) >= self._concurrency:
            self._parts.append(self._inflight.popleft().result())
        self._inflight.append(self._executor.submit(self._send, upload_id, number, data))

    def _send(self, upload_id: str, number: int, data: bytes) -> CompletedPartTypeDef:
        answer = self._s3.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _drain(self) -> None:
        while self._inflight:
            self._parts.append(self._inflight.popleft().result())

    def complete(self, sha256: str) -> None:
        upload_id = self._start()
        self._drain()
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda part: part["PartNumber"])},
        )
        self._done = True
        tags: list[TagTypeDef] = [{"Key": "sha256", "Value": sha256}]
        for pair in filter(None, self._tagging.split("&")):
            name, _, value = pair.partition("=")
            tags.append({"Key": name, "Value": value})
        self._s3.put_object_tagging(Bucket=self._bucket, Key=self._key, Tagging={"TagSet": tags})

    def restart(self) -> None:
        self.abort_unless_complete()
        self._parts = []
        self._upload_id = None

    def abort_unless_complete(self) -> None:
        # Parts still uploading would be stored after the abort: wait for them first.
        for future in self._inflight:
            future.cancel()
        for future in self._inflight:
            if not future.cancelled():
                future.exception()  # waits; the part's outcome no longer matters
        self._inflight.clear()
        if self._upload_id is not None and not self._done:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
            self._upload_id = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
