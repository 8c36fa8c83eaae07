"""Integration tests: VideoCopier streaming simulator outputs into moto S3, and refusing URLs."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from kling_local.simulator import WaveSpeedSimulator
from kling_pipeline.errors import PermanentError, TransientError
from kling_pipeline.finalize.fetch import OutputFetcher
from kling_pipeline.finalize.policy import DownloadPolicy, RefusedUrl
from kling_pipeline.finalize.upload import StoredObject, VideoCopier
from kling_pipeline.settings import DEFAULT_OUTPUT_HOSTS
from kling_pipeline.wavespeed import WaveSpeedClient
from tests.conftest import ServerStarter, SimFactory
from tests.integration.conftest import VIDEOS_BUCKET

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = VIDEOS_BUCKET
KEY = "videos/job-1/0.mp4"
MIB = 1024 * 1024
PART = 5 * MIB
BIG = 12 * 1000 * 1000
TAGGING = "job_id=job-1&prediction_id=abc123"


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"no DNS lookup expected, got {host}:{port}")


#: Simulator settings of this module's `make_sim` / `sim` fixtures (tests/conftest.py).
SIM_DEFAULTS: dict[str, Any] = {"generation_seconds": 0.0, "processing_after_seconds": 0.0}


def generated(sim: WaveSpeedSimulator, prompt: str) -> tuple[str, str]:
    """Submits a prompt through the real client; returns (task id, first output URL)."""
    api = WaveSpeedClient(sim.base_url, lambda: sim.config.api_key, sleep=lambda s: None)
    task_id = api.submit_generation({"prompt": prompt})
    prediction = api.read_prediction(task_id)
    assert prediction.status == "completed"
    return task_id, prediction.outputs[0]


def copier_for(
    s3: S3Client,
    *local_hosts: str,
    max_bytes: int = 2 * 1024**3,
    attempts: int = 3,
    deadline_s: float = 600.0,
) -> VideoCopier:
    policy = DownloadPolicy(
        allowed_hosts=DEFAULT_OUTPUT_HOSTS,
        local_hosts=local_hosts,
        max_bytes=max_bytes,
        timeout_s=5.0,
        deadline_s=deadline_s,
    )
    return VideoCopier(
        s3, policy, part_bytes=PART, concurrency=2, attempts=attempts, resolver=no_dns
    )


def stored_bytes(s3: S3Client) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()


def tags(s3: S3Client) -> dict[str, str]:
    tag_set = s3.get_object_tagging(Bucket=BUCKET, Key=KEY)["TagSet"]
    return {tag["Key"]: tag["Value"] for tag in tag_set}


def assert_nothing_left(s3: S3Client) -> None:
    """No object and no (billable, invisible) multipart upload remains in the bucket."""
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def worker_threads() -> set[threading.Thread]:
    """The copier's own threads still alive: hashing the download, uploading parts."""
    return {t for t in threading.enumerate() if t.name.startswith(("sha256", "part"))}


def copy_refused(copier: VideoCopier, url: str, code: str) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        copier.copy(url, BUCKET, KEY, tagging=TAGGING)
    assert caught.value.code == code, caught.value
    return caught.value


# ------------------------------------------------------------------------------ a tiny web server


@dataclass
class Served:
    """What a local test server does for GET: redirect, or send bytes (optionally misbehaving)."""

    body: bytes = b""
    redirect_to: str | None = None
    chunked: bool = False
    cut_first: bool = False
    ignore_range: bool = False
    #: Answer a Range from the start of its `range_block`-aligned block (RFC 9110 allows it).
    range_block: int = 0
    #: Answer a Range with 206 but the body's first bytes and no Content-Range (a broken proxy).
    shifted_206: bool = False
    #: Hold the body back this long after the headers (a slow origin).
    pause_after_headers: float = 0.0
    #: After the first `drip_after` bytes, send one byte per `drip_every` seconds (a tarpit).
    drip_after: int | None = None
    drip_every: float = 0.0
    #: Send this Content-Length header instead of the real one.
    content_length: str | None = None
    #: Serve this body from the second request on (the output changed under us).
    later_body: bytes | None = None
    requests: list[dict[str, str]] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    served: Served


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        served = self.server.served
        served.requests.append({"path": self.path, **dict(self.headers.items())})
        if served.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", served.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = served.body
        if served.later_body is not None and len(served.requests) > 1:
            body = served.later_body
        partial = "Range" in self.headers and not served.ignore_range
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if partial else 0
        if served.range_block:
            start -= start % served.range_block
        if served.shifted_206:
            body, start = body[: len(body) - start], 0
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "video/mp4")
        if partial and not served.shifted_206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if served.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for offset in range(0, len(body), 64 * 1024):
                piece = body[offset : offset + 64 * 1024]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", served.content_length or str(len(body) - start))
        self.end_headers()
        if served.drip_after is not None:
            self._drip(body[start:], served)
            return
        if served.pause_after_headers:
            self.wfile.flush()
            time.sleep(served.pause_after_headers)
        if served.cut_first and len(served.requests) == 1:
            self.wfile.write(body[start : len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def _drip(self, body: bytes, served: Served) -> None:
        assert served.drip_after is not None
        self.wfile.write(body[: served.drip_after])
        try:
            for offset in range(served.drip_after, len(body)):
                self.wfile.flush()
                time.sleep(served.drip_every)
                self.wfile.write(body[offset : offset + 1])
        except OSError:
            pass  # the client gave up: that is the point

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve(http_servers: ServerStarter) -> Callable[[Served], str]:
    """Starts a local HTTP server behaving as told; returns its host:port."""

    def start(served: Served) -> str:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.served = served
        return http_servers(server)

    return start


def mp4_bytes(size: int) -> bytes:
    """Bytes that pass the ftyp check, with a non-repeating tail so misplaced bytes show."""
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    tail = b"".join(hashlib.sha256(b"%d" % n).digest() for n in range(size // 32 + 1))
    return (head + tail)[:size]


# ------------------------------------------------------------------------------ successful copies


def test_copy_stores_identical_bytes_when_output_downloads(
    s3: S3Client, sim: WaveSpeedSimulator
) -> None:
    # Given a generated video served by the simulator
    task_id, url = generated(sim, "a lighthouse at dusk")

    # When copying it into S3
    stored = copier_for(s3, sim.host_port).copy(url, BUCKET, KEY, tagging=TAGGING)

    # Then the object holds exactly the simulator's bytes, typed and tagged with its sha256
    data = stored_bytes(s3)
    expected = sim.output_sha256(task_id)
    assert hashlib.sha256(data).hexdigest() == expected
    assert stored == StoredObject(BUCKET, KEY, sim.output_size(task_id), expected)
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ContentType"] == "video/mp4"
    assert head["ContentLength"] == len(data)
    assert tags(s3) == {"sha256": expected, "job_id": "job-1", "prediction_id": "abc123"}
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert sim.stats()["downloads_completed"] == 1


def test_copy_uploads_several_parts_when_output_larger_than_part(
    s3: S3Client, make_sim: SimFactory
) -> None:
    # Given a 12 MB video and 5 MiB parts
    sim = make_sim(output_size=BIG)
    task_id, url = generated(sim, "a long take")

    # When copying it
    stored = copier_for(s3, sim.host_port).copy(url, BUCKET, KEY, tagging=TAGGING)

    # Then the bytes match and S3 assembled them from three parts
    assert hashlib.sha256(stored_bytes(s3)).hexdigest() == sim.output_sha256(task_id)
    assert stored.size == BIG
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ETag"].strip('"').endswith("-3")
    assert tags(s3)["sha256"] == stored.sha256
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_copy_stores_part_checksums_when_output_larger_than_part(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a 12 MB output, so three 5 MiB parts
    body = mp4_bytes(BIG)
    host = serve(Served(body=body))

    # When copying it
    copier_for(s3, host).copy(f"http://{host}/v.mp4", BUCKET, KEY)

    # Then S3 keeps a CRC32 of every part, combined as S3 does: the CRC32 of the parts' CRC32s
    attributes = s3.get_object_attributes(Bucket=BUCKET, Key=KEY, ObjectAttributes=["Checksum"])
    parts = [body[start : start + PART] for start in range(0, BIG, PART)]
    combined = b"".join(zlib.crc32(part).to_bytes(4, "big") for part in parts)
    expected = base64.b64encode(zlib.crc32(combined).to_bytes(4, "big")).decode()
    assert attributes["Checksum"].get("ChecksumType") == "COMPOSITE"
    assert attributes["Checksum"].get("ChecksumCRC32", "").split("-")[0] == expected


@pytest.mark.parametrize("size", [None, BIG])
def test_copy_resumes_when_download_cut_once(
    s3: S3Client, make_sim: SimFactory, size: int | None
) -> None:
    # Given a video whose first download is cut halfway (after a part was sent, when big)
    sim = make_sim(output_size=size)
    task_id, url = generated(sim, "flaky cdn [sim:cut-once]")

    # When copying it
    stored = copier_for(s3, sim.host_port).copy(url, BUCKET, KEY, tagging=TAGGING)

    # Then a second (ranged) download finished it and the stored bytes are exact
    assert hashlib.sha256(stored_bytes(s3)).hexdigest() == sim.output_sha256(task_id)
    assert stored.sha256 == sim.output_sha256(task_id)
    assert tags(s3)["sha256"] == stored.sha256
    stats = sim.stats()
    assert (stats["downloads_started"], stats["downloads_completed"]) == (2, 1)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_copy_restarts_from_zero_when_server_ignores_range(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a server that cuts the first 12 MB download halfway and ignores Range afterwards
    body = mp4_bytes(BIG)
    served = Served(body=body, cut_first=True, ignore_range=True)
    host = serve(served)

    # When copying it
    stored = copier_for(s3, host).copy(f"http://{host}/v.mp4", BUCKET, KEY, tagging=TAGGING)

    # Then it asked to resume past a part it had already uploaded, was sent everything again,
    # and stored each byte once, in order
    first, second = (request.get("Range") for request in served.requests)
    assert first is None and second is not None
    assert PART <= int(second.removeprefix("bytes=").rstrip("-")) <= BIG // 2
    assert stored_bytes(s3) == body
    assert stored.sha256 == hashlib.sha256(body).hexdigest()
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_copy_fails_leaving_nothing_when_replayed_bytes_differ(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a 12 MB download cut halfway (a part already uploaded), then sent again from byte 0
    # with different bytes of the same length
    body = mp4_bytes(BIG)
    changed = body[:100] + bytes(255 - b for b in body[100:200]) + body[200:]
    host = serve(Served(body=body, cut_first=True, ignore_range=True, later_body=changed))

    # When copying it
    with pytest.raises(TransientError) as caught:
        copier_for(s3, host).copy(f"http://{host}/v.mp4", BUCKET, KEY, tagging=TAGGING)

    # Then no mix of the two is stored: a retryable output_changed, nothing left behind
    assert caught.value.code == "output_changed"
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    "served",
    [
        Served(cut_first=True, range_block=4 * MIB),
        Served(cut_first=True, shifted_206=True),
    ],
    ids=["block-aligned-206", "206-without-content-range"],
)
def test_copy_stores_exact_bytes_when_resumed_range_differs_from_request(
    s3: S3Client, serve: Callable[[Served], str], served: Served
) -> None:
    # Given a 12 MB download cut halfway, then answered with a 206 that does not start where
    # asked: earlier (block-aligned, announced in Content-Range) or without any Content-Range
    served.body = body = mp4_bytes(BIG)
    host = serve(served)

    # When copying it
    stored = copier_for(s3, host).copy(f"http://{host}/v.mp4", BUCKET, KEY, tagging=TAGGING)

    # Then no byte is duplicated or shifted: the object is exactly the source
    assert stored_bytes(s3) == body
    assert stored.sha256 == hashlib.sha256(body).hexdigest() == tags(s3)["sha256"]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_copy_follows_redirect_when_target_allowed(
    s3: S3Client, sim: WaveSpeedSimulator, serve: Callable[[Served], str]
) -> None:
    # Given a local server redirecting to the simulator's output, both allowed
    task_id, url = generated(sim, "moved")
    front = serve(Served(redirect_to=url))

    # When copying from the redirecting URL
    copier_for(s3, front, sim.host_port).copy(f"http://{front}/v.mp4", BUCKET, KEY)

    # Then the video arrived intact
    assert hashlib.sha256(stored_bytes(s3)).hexdigest() == sim.output_sha256(task_id)


# ------------------------------------------------------------------------------ failed copies


@pytest.mark.parametrize("size", [None, BIG])
def test_copy_fails_leaving_nothing_when_download_always_truncated(
    s3: S3Client, make_sim: SimFactory, size: int | None
) -> None:
    # Given a video whose downloads always stop halfway (a part is already uploaded when big)
    sim = make_sim(output_size=size)
    _, url = generated(sim, "broken cdn [sim:truncate]")

    # When copying it with three attempts
    error = copy_refused(copier_for(s3, sim.host_port), url, "download_incomplete")

    # Then it gave up once three downloads in a row ended with under a MiB of progress each
    # (each answer here sends half of what is left: a big video's first halves are progress),
    # and no object or multipart upload remains
    assert "3 attempts" in error.message
    assert sim.stats()["downloads_started"] == (3 if size is None else 5)
    assert_nothing_left(s3)


def test_copy_fails_leaving_nothing_when_output_not_mp4(
    s3: S3Client, sim: WaveSpeedSimulator
) -> None:
    # Given an "output" that is an HTML error page served as video/mp4
    _, url = generated(sim, "bad cdn [sim:not-mp4]")

    # When copying it / Then it is refused as not_mp4 and nothing is stored
    copy_refused(copier_for(s3, sim.host_port), url, "not_mp4")
    assert_nothing_left(s3)


def test_copy_fails_leaving_nothing_when_content_length_over_limit(
    s3: S3Client, make_sim: SimFactory
) -> None:
    # Given a 12 MB video and a 10 MiB limit
    sim = make_sim(output_size=BIG)
    _, url = generated(sim, "too long")

    # When copying it
    copy_refused(copier_for(s3, sim.host_port, max_bytes=10 * MIB), url, "output_too_large")

    # Then nothing is stored and the download was not read through
    assert_nothing_left(s3)
    assert sim.stats()["downloads_completed"] == 0


def test_copy_fails_leaving_nothing_when_unsized_body_over_limit(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a chunked (no Content-Length) 12 MB body and a 6 MiB limit, so a part is sent first
    host = serve(Served(body=mp4_bytes(BIG), chunked=True))

    # When copying it / Then it stops at the limit and aborts what it uploaded
    copier = copier_for(s3, host, max_bytes=6 * MIB)
    copy_refused(copier, f"http://{host}/v.mp4", "output_too_large")
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    "served",
    [
        Served(chunked=True),
        Served(cut_first=True, ignore_range=True, later_body=mp4_bytes(BIG)[::-1]),
    ],
    ids=["over-limit-mid-part", "replay-differs"],
)
def test_copy_leaves_no_thread_or_upload_when_stopped_mid_download(
    s3: S3Client, serve: Callable[[Served], str], served: Served
) -> None:
    # Given a 12 MB output whose copy stops after a part is uploaded: over a 6 MiB limit in
    # the second part, or cut and replayed with other bytes
    before = worker_threads()
    served.body = mp4_bytes(BIG)
    host = serve(served)

    # When copying it
    with pytest.raises((PermanentError, TransientError)):
        copier_for(s3, host, max_bytes=6 * MIB if served.chunked else BIG).copy(
            f"http://{host}/v.mp4", BUCKET, KEY
        )

    # Then no hashing or part upload thread outlives it, and nothing is stored
    assert worker_threads() == before
    assert_nothing_left(s3)


def test_next_copy_succeeds_when_previous_left_body_unread(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a slow origin whose first output is refused on its Content-Length alone
    served = Served(body=mp4_bytes(2 * MIB), pause_after_headers=0.5)
    host = serve(served)
    copier = copier_for(s3, host, max_bytes=MIB, attempts=1)
    copy_refused(copier, f"http://{host}/too-big.mp4", "output_too_large")

    # When the same copier (one per Lambda container) copies a small output from that origin
    served.body = body = mp4_bytes(4096)
    stored = copier.copy(f"http://{host}/next.mp4", BUCKET, KEY)

    # Then it is not handed the first, abandoned body: the new video is stored exactly
    assert stored_bytes(s3) == body
    assert stored.size == len(body)


def test_copy_ends_with_transient_error_when_server_drips(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a server that sends a valid MP4 head, then one byte every 0.2 s (each byte well
    # inside the 5 s read timeout), and a one-second download deadline
    host = serve(Served(body=mp4_bytes(4096), drip_after=64, drip_every=0.2))
    copier = copier_for(s3, host, deadline_s=1.0)

    # When copying it
    with pytest.raises(TransientError) as caught:
        copier.copy(f"http://{host}/v.mp4", BUCKET, KEY)

    # Then it gives up with a retryable deadline error naming the progress, storing nothing
    assert caught.value.code == "download_deadline"
    assert "of 4096 bytes" in caught.value.message
    assert_nothing_left(s3)


@pytest.mark.parametrize("reads_allowed", [0, 1, 3])
def test_reader_ends_at_deadline_when_clock_passes_it_mid_download(
    serve: Callable[[Served], str], reads_allowed: int
) -> None:
    # Given a healthy server, a 100 s deadline and a clock that jumps 40 s per look, so the
    # deadline passes after the open and `reads_allowed` reads
    host = serve(Served(body=mp4_bytes(3 * MIB)))
    policy = DownloadPolicy(allowed_hosts=(), local_hosts=(host,), deadline_s=100.0)
    ticks = iter([0.0, 0.0, *(40.0 * (n + 1) for n in range(reads_allowed)), 1000.0])
    reader = OutputFetcher(policy, no_dns).reader(f"http://{host}/v.mp4", clock=lambda: next(ticks))

    # When reading the output in small pieces
    with pytest.raises(TransientError) as caught:
        while reader.readinto(bytearray(64 * 1024)):
            pass
    reader.close()

    # Then the download stops at the deadline with a retryable error, whatever it got so far
    assert caught.value.code == "download_deadline"
    assert "within 100 s" in caught.value.message


@pytest.mark.parametrize(
    "served",
    [
        Served(cut_first=True),
        Served(cut_first=True, ignore_range=True),
        Served(cut_first=True, range_block=4 * MIB),
    ],
    ids=["ranged-resume", "replayed-from-zero", "block-aligned-206"],
)
def test_reader_hash_is_of_whole_output_when_cut_mid_part_and_resumed(
    serve: Callable[[Served], str], served: Served
) -> None:
    # Given a 12 MB output whose first download is cut at 6 MB, inside the second 5 MiB part
    served.body = body = mp4_bytes(BIG)
    host = serve(served)
    policy = DownloadPolicy(allowed_hosts=(), local_hosts=(host,))
    reader = OutputFetcher(policy, no_dns).reader(f"http://{host}/v.mp4")

    # When reading it part by part into one buffer, wiped as soon as each read returns (a
    # hash still reading the buffer afterwards would see the zeros)
    buffer, zeros, passed_on = bytearray(PART), bytes(PART), []
    while count := reader.readinto(buffer):
        passed_on.append(bytes(buffer[:count]))
        buffer[:] = zeros
    reader.close()

    # Then it asked to resume mid-part, and both the bytes and the hash are exactly the output's
    assert served.requests[1].get("Range") == f"bytes={BIG // 2}-"
    assert b"".join(passed_on) == body
    assert reader.received == len(body)
    assert reader.sha256 == hashlib.sha256(body).hexdigest()


def test_reader_leaves_no_thread_when_closed_mid_download(serve: Callable[[Served], str]) -> None:
    # Given a reader one part into a 12 MB output
    before = worker_threads()
    host = serve(Served(body=mp4_bytes(BIG)))
    policy = DownloadPolicy(allowed_hosts=(), local_hosts=(host,))
    reader = OutputFetcher(policy, no_dns).reader(f"http://{host}/v.mp4")
    assert reader.readinto(bytearray(PART)) == PART

    # When its caller gives up on it
    reader.close()

    # Then its hashing thread is gone, and the hash is still that of what was passed on
    assert worker_threads() == before
    assert reader.sha256 == hashlib.sha256(mp4_bytes(BIG)[:PART]).hexdigest()


@pytest.mark.parametrize("length", ["abc", "12x", "-5", "+4096", "1_024", "4096, 4095", " "])
def test_copy_fails_clearly_when_content_length_malformed(
    s3: S3Client, serve: Callable[[Served], str], length: str
) -> None:
    # Given a server whose every answer carries a malformed Content-Length
    served = Served(body=mp4_bytes(4096), content_length=length)
    host = serve(served)

    # When copying it / Then the download fails with its own code naming the header, no crash
    error = copy_refused(copier_for(s3, host), f"http://{host}/v.mp4", "download_incomplete")
    assert "Content-Length" in error.message
    assert_nothing_left(s3)


@pytest.mark.parametrize("size", [4096, BIG])
def test_copy_reports_s3_error_itself_when_upload_refused(
    s3: S3Client, serve: Callable[[Served], str], size: int
) -> None:
    # Given tagging S3 refuses (a tag value over 256 characters), found out at completion
    host = serve(Served(body=mp4_bytes(size)))
    tagging = f"job_id=job-1&prediction_id={'x' * 300}"

    # When copying
    with pytest.raises(ClientError) as caught:
        copier_for(s3, host).copy(f"http://{host}/v.mp4", BUCKET, KEY, tagging=tagging)

    # Then the caller sees S3's own refusal, not the failed clean-up after it, and no
    # multipart upload is left (moto refuses at completion, after storing the object)
    assert caught.value.response["Error"]["Code"] == "InvalidTag"
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_copy_fails_when_output_gone(s3: S3Client, sim: WaveSpeedSimulator) -> None:
    # Given / When copying an output URL the simulator does not have
    url = f"{sim.base_url}/outputs/{'0' * 32}/0.mp4"
    copy_refused(copier_for(s3, sim.host_port), url, "output_missing")

    # Then nothing is stored
    assert_nothing_left(s3)


# ------------------------------------------------------------------------------ refused URLs


@pytest.mark.parametrize(
    "location",
    ["http://{target}/video.mp4", "https://{target}/video.mp4"],
)
def test_redirect_refused_before_request_when_target_disallowed(
    s3: S3Client, serve: Callable[[Served], str], location: str
) -> None:
    # Given an allowed local server redirecting to another local server that is not allowed
    target_served = Served(body=mp4_bytes(4096))
    target = serve(target_served)
    front_served = Served(redirect_to=location.format(target=target))
    front = serve(front_served)

    # When copying from the allowed one
    with pytest.raises(RefusedUrl):
        copier_for(s3, front).copy(f"http://{front}/v.mp4", BUCKET, KEY)

    # Then the redirect was refused: the disallowed server never saw a request
    assert len(front_served.requests) == 1
    assert target_served.requests == []
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://10.0.0.1/v.mp4",
        "https://example.com/v.mp4",
    ],
)
def test_redirect_refused_when_pointing_inside_or_off_list(
    s3: S3Client, serve: Callable[[Served], str], location: str
) -> None:
    # Given an allowed server redirecting to the metadata service, a private or an unknown host
    front = serve(Served(redirect_to=location))

    # When / Then the copy is refused without any lookup or request there, nothing stored
    with pytest.raises(RefusedUrl):
        copier_for(s3, front).copy(f"http://{front}/v.mp4", BUCKET, KEY)
    assert_nothing_left(s3)


def test_url_refused_without_request_when_local_server_not_listed(
    s3: S3Client, serve: Callable[[Served], str]
) -> None:
    # Given a local server serving a valid video, not on the local list
    served = Served(body=mp4_bytes(4096))
    host = serve(served)

    # When copying from it over http and https
    for url in (f"http://{host}/v.mp4", f"https://{host}/v.mp4"):
        with pytest.raises(RefusedUrl):
            copier_for(s3).copy(url, BUCKET, KEY)

    # Then it received no request and nothing is stored
    assert served.requests == []
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    "url",
    [
        "http://unknown.example.com/v.mp4",
        "https://unknown.example.com/v.mp4",
        "http://cdn.wavespeed.ai/v.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/v.mp4",
        "https://10.1.2.3:8443/v.mp4",
    ],
)
def test_url_refused_before_any_request_when_disallowed(s3: S3Client, url: str) -> None:
    # Given a copier allowing only WaveSpeed's hosts (any DNS lookup would fail the test)
    # When copying from a disallowed URL / Then it is refused and nothing is stored
    with pytest.raises(RefusedUrl):
        copier_for(s3).copy(url, BUCKET, KEY)
    assert_nothing_left(s3)
