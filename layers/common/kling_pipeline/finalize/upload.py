"""Putting one downloaded output into S3: streamed, tagged with its SHA-256, never half-stored."""

from __future__ import annotations

import io
import logging
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote

from .fetch import OutputFetcher, VerifiedReader
from .policy import DownloadPolicy, Resolver, system_resolver

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, TagTypeDef

logger = logging.getLogger(__name__)

#: The checksum S3 keeps for the object: a CRC32 of every part, combined. botocore computes
#: each part's CRC32 anyway; declaring it when the upload starts makes S3 check every part
#: against it and keep them (s3transfer's upload_file does the same), rather than work out a
#: whole-object CRC64NVME of its own at completion.
CHECKSUM_ALGORITHM: Final = "CRC32"


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str


class VideoCopier:
    """Streams an output URL into an S3 multipart upload: parts upload while the next downloads.

    Kept hand-built rather than s3transfer's `upload_fileobj`: measured on the same machine, the
    latter needs a fresh part-sized bytes object per part (a non-seekable source) and grew the
    peak RSS of a 500 MB copy past 64 MB, where these reused buffers stay near 56 MB.
    """

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
        self._fetcher = OutputFetcher(policy, resolver)
        self._part_bytes = part_bytes
        self._concurrency = concurrency
        self._attempts = attempts

    def copy(self, url: str, bucket: str, key: str, *, tagging: str = "") -> StoredObject:
        """Copies one output; on any failure the multipart upload is aborted, never left behind,
        and the failure surfaces as itself (an abort that fails too is only logged)."""
        reader = self._fetcher.reader(url, attempts=self._attempts)
        upload = _MultipartUpload(
            self._s3, bucket, key, tagging, self._concurrency, self._part_bytes
        )
        try:
            _pump(reader, upload)
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        finally:
            reader.close()
        _tag(self._s3, bucket, key, tagging, reader.sha256)
        return StoredObject(bucket, key, reader.received, reader.sha256)


def _pump(reader: VerifiedReader, upload: _MultipartUpload) -> None:
    """Reads the output straight into part buffers; full ones upload while the next fills."""
    while True:
        buffer = upload.buffer()
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer):
            count = reader.readinto(view[filled:])
            if not count:
                break
            filled += count
        if filled == len(buffer):
            upload.ship(buffer, filled)
            continue
        if filled or not upload.shipped:
            upload.ship(buffer, filled)  # the last part may be short
        else:
            upload.give_back(buffer)
        return


def _tag(s3: S3Client, bucket: str, key: str, tagging: str, digest: str) -> None:
    tags: list[TagTypeDef] = [{"Key": "sha256", "Value": digest}]
    for pair in filter(None, tagging.split("&")):
        name, _, value = pair.partition("=")
        tags.append({"Key": unquote(name), "Value": unquote(value)})
    s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags})


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


class _MultipartUpload:
    """One S3 multipart upload fed through reusable buffers, parts uploading concurrently.

    Memory stays at (concurrency + 1) part buffers whatever the file size: a new buffer is
    handed out only when one is free again.
    """

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
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: list[Future[CompletedPartTypeDef]] = []
        self._parts: list[CompletedPartTypeDef] = []
        self._upload_id: str | None = None
        self._done = False
        self.shipped = 0

    def buffer(self) -> bytearray:
        """A free buffer; blocks while every buffer is still uploading (the memory bound)."""
        if self._buffers <= self._concurrency and self._free.empty():
            self._buffers += 1
            return bytearray(self._part_bytes)
        # Every part in flight hands its buffer back when done, failed or not: this wakes up.
        buffer = self._free.get()
        self._reap()  # a failed part fails the copy now, not at the end
        return buffer

    def give_back(self, buffer: bytearray) -> None:
        self._free.put(buffer)

    def ship(self, buffer: bytearray, size: int) -> None:
        if self._upload_id is None:
            extra: dict[str, Any] = {"Tagging": self._tagging} if self._tagging else {}
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                ContentType="video/mp4",
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                **extra,
            )["UploadId"]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="part")
        self.shipped += 1
        view = memoryview(buffer)[:size]
        self._inflight.append(
            self._pool.submit(self._send, self._upload_id, self.shipped, buffer, view)
        )

    def _send(
        self, upload_id: str, number: int, buffer: bytearray, view: memoryview
    ) -> CompletedPartTypeDef:
        try:
            answer = self._s3.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                Body=cast(IO[bytes], _ViewReader(view)),
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            )
            part: CompletedPartTypeDef = {"PartNumber": number, "ETag": answer["ETag"]}
            if "ChecksumCRC32" in answer:
                part["ChecksumCRC32"] = answer["ChecksumCRC32"]
            return part
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

    def complete(self) -> None:
        for future in self._inflight:
            self._parts.append(future.result())
        self._inflight = []
        assert self._upload_id is not None
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda part: part["PartNumber"])},
        )
        self._done = True
        self._close_pool()

    def abort(self) -> None:
        """Aborts an unfinished upload. Called while an error is propagating: a failure here
        is logged, never raised, so the caller sees the error that stopped the copy."""
        # Parts still uploading would be stored after the abort: wait for them first.
        for future in self._inflight:
            future.cancel()
        for future in self._inflight:
            if not future.cancelled():
                future.exception()  # waits; the part's outcome no longer matters
        self._inflight = []
        self._close_pool()
        if self._upload_id is None or self._done:
            return
        try:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except Exception:  # noqa: BLE001 - the copy's own error is the one to report
            logger.warning("could not abort multipart upload %s", self._upload_id, exc_info=True)
        self._upload_id = None

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
