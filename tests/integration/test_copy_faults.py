"""Integration tests: generated download faults against the copy's invariants, into moto S3.

A scripted server misbehaves per request (cuts the connection at offsets chosen around the
`ftyp` box, the part boundaries and the last byte; ignores or mislabels Range; declares more or
fewer bytes than it sends; changes the body after a cut; writes in tiny pieces). Whatever it
does, the copy either stores exactly the bytes it was served, tagged with their SHA-256, or
fails with a pipeline error leaving no object and no multipart upload, and no thread it started
outlives it.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from kling_pipeline.errors import PermanentError, PipelineError, TransientError
from kling_pipeline.finalize.policy import DownloadPolicy
from kling_pipeline.finalize.upload import VideoCopier
from kling_pipeline.settings import DEFAULT_OUTPUT_HOSTS
from tests.conftest import ServerStarter
from tests.integration.conftest import VIDEOS_BUCKET

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = VIDEOS_BUCKET
KEY = "videos/job-1/0.mp4"
PART = 5 * 1024 * 1024
ATTEMPTS = 3
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
ANSWERS = ("honor", "ignore", "wrong_start", "unlabelled")


def source_bytes(size: int, salt: bytes = b"") -> bytes:
    """An MP4-signed body whose every 32 bytes differ, so a shifted byte shows."""
    tail = b"".join(hashlib.sha256(salt + b"%d" % n).digest() for n in range(size // 32 + 1))
    return (FTYP + tail)[:size]


@dataclass(frozen=True)
class Act:
    """What the server does for one request."""

    #: For a Range request: 206 as asked, 200 with the whole body, 206 from another start,
    #: or 206 without Content-Range.
    answer: str = "honor"
    #: Close the connection once the body has reached this offset (of the whole output).
    cut_at: int | None = None
    #: Serve another body of the same length (the output changed).
    changed: bool = False
    #: Declare this many bytes more (+) or fewer (-) than the body sent.
    declared_delta: int = 0
    small_writes: bool = False


@dataclass
class Script:
    body: bytes
    changed_body: bytes
    acts: list[Act]
    served: list[Act] = field(default_factory=list)
    #: Label each body with a strong ETag and honour If-Range (a changed body is sent whole).
    etags: bool = False

    def next_act(self) -> Act:
        act = self.acts[len(self.served)] if len(self.served) < len(self.acts) else Act()
        self.served.append(act)
        return act


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    script: Script


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        script = self.server.script
        act = script.next_act()
        body = script.changed_body if act.changed else script.body
        asked = self.headers.get("Range")
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        headers: dict[str, str] = {"Content-Type": "video/mp4"}
        stale = False
        if script.etags:
            headers["ETag"] = etag_of(body)
            stale = self.headers.get("If-Range") not in (None, headers["ETag"])
        if not asked or act.answer == "ignore" or stale:
            status, start = 200, 0
        elif act.answer == "wrong_start":
            status, start = 206, max(0, start - 4096)
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        elif act.answer == "unlabelled":
            status = 206
        else:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        end = len(body) if act.cut_at is None else max(start, min(len(body), act.cut_at))
        headers["Content-Length"] = str(len(body) - start + act.declared_delta)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            step = 997 if act.small_writes else 256 * 1024
            for offset in range(start, end, step):
                self.wfile.write(body[offset : min(end, offset + step)])
        except OSError:
            return  # the client gave up on this answer
        if end < len(body) or act.declared_delta:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve(http_servers: ServerStarter) -> Callable[[Script], str]:
    def start(script: Script) -> str:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.script = script
        return http_servers(server)

    return start


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"no DNS lookup expected, got {host}:{port}")


def copier(s3: S3Client, host: str, max_bytes: int) -> VideoCopier:
    policy = DownloadPolicy(
        allowed_hosts=DEFAULT_OUTPUT_HOSTS,
        local_hosts=(host,),
        max_bytes=max_bytes,
        timeout_s=5.0,
        deadline_s=120.0,
    )
    return VideoCopier(
        s3, policy, part_bytes=PART, concurrency=2, attempts=ATTEMPTS, resolver=no_dns
    )


def copy_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("sha256", "part"))}


def cut_offsets(rng: random.Random, size: int) -> list[int]:
    """Offsets where a cut tends to hurt: the start, inside the ftyp box, around the part
    boundaries, the last bytes; and one anywhere."""
    around_parts = [b + d for b in range(PART, size, PART) for d in (-1, 0, 1)]
    candidates = [0, 1, 7, 11, 12, 23, 24, size - 1, size - 2, rng.randrange(size), *around_parts]
    return [offset for offset in candidates if 0 <= offset < size]


def generated_case(seed: int) -> tuple[bytes, bytes, list[Act]]:
    rng = random.Random(seed)
    size = rng.choice([30, 5000, PART - 1, PART, PART + 1, 2 * PART + 17])
    body = source_bytes(size)
    changed = body[:24] + source_bytes(size, b"changed")[24:]  # same signature, other content
    acts = []
    for _ in range(rng.randint(0, ATTEMPTS + 1)):
        acts.append(
            Act(
                answer=rng.choice(ANSWERS),
                cut_at=rng.choice(cut_offsets(rng, size)),
                changed=rng.random() < 0.15,
                declared_delta=rng.choice([0] * 8 + [-1, 1]),
                small_writes=rng.random() < 0.2,
            )
        )
    return body, changed, acts


def assert_stored_consistently(s3: S3Client, stored_sha: str, stored_size: int) -> bytes:
    data = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    tag_set = s3.get_object_tagging(Bucket=BUCKET, Key=KEY)["TagSet"]
    assert hashlib.sha256(data).hexdigest() == stored_sha
    assert {t["Key"]: t["Value"] for t in tag_set}["sha256"] == stored_sha
    assert len(data) == stored_size
    return data


def assert_nothing_left(s3: S3Client) -> None:
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


@pytest.mark.parametrize("seed", range(40))
def test_copy_stores_served_bytes_or_nothing_when_server_misbehaves(
    s3: S3Client, serve: Callable[[Script], str], seed: int
) -> None:
    # Given a server misbehaving per a generated script
    body, changed, acts = generated_case(seed)
    script = Script(body, changed, acts)
    host = serve(script)
    threads = copy_threads()

    # When the output is copied
    try:
        stored = copier(s3, host, max_bytes=2 * PART + 17).copy(
            f"http://{host}/v.mp4", BUCKET, KEY, tagging="job_id=j"
        )
    except PipelineError as exc:
        assert isinstance(exc, PermanentError | TransientError)
        outcome: bytes | PipelineError = exc
    else:
        outcome = assert_stored_consistently(s3, stored.sha256, stored.size)

    # Then no copy thread is left, and the outcome is what the served answers allow
    assert copy_threads() == threads
    served = script.served
    cuts = sum(1 for a in served if a.cut_at is not None)
    if isinstance(outcome, PipelineError):
        assert_nothing_left(s3)
        if len(body) < 24:
            return  # too short to be an MP4: refusing it is right
        clean = all(not a.changed and not a.declared_delta for a in served)
        assert not (clean and cuts < ATTEMPTS), (outcome, served)
    elif all(not a.changed and not a.declared_delta for a in served):
        assert outcome == body, served
    elif all(not a.declared_delta for a in served) and all(
        a.answer == "ignore" or a.changed == served[0].changed for a in served
    ):
        assert outcome in (body, changed), served


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_copy_holds_size_cap_exactly_when_output_is_cap_plus_delta(
    s3: S3Client, serve: Callable[[Script], str], delta: int
) -> None:
    # Given an output one byte under, at, or over the size cap, cut once mid-way
    cap = PART + 1
    body = source_bytes(cap + delta)
    host = serve(Script(body, body, [Act(cut_at=PART)]))

    # When it is copied
    run = copier(s3, host, max_bytes=cap).copy
    if delta > 0:
        # Then over the cap nothing is stored
        with pytest.raises(PermanentError) as caught:
            run(f"http://{host}/v.mp4", BUCKET, KEY)
        assert caught.value.code == "output_too_large"
        assert_nothing_left(s3)
    else:
        # Then at or under it every byte is
        stored = run(f"http://{host}/v.mp4", BUCKET, KEY)
        assert assert_stored_consistently(s3, stored.sha256, stored.size) == body


def test_copy_goes_on_through_many_cuts_when_each_attempt_makes_progress(
    s3: S3Client, serve: Callable[[Script], str]
) -> None:
    # Given a large output on a poor network: cut every 1.5 MiB, more cuts than attempts,
    # each resume answered from where the last one ended
    body = source_bytes(2 * PART + 17)
    step = 3 * 1024 * 1024 // 2
    acts = [Act(cut_at=step * n) for n in range(1, ATTEMPTS + 3)]
    host = serve(Script(body, body, acts))

    # When it is copied
    stored = copier(s3, host, max_bytes=len(body)).copy(f"http://{host}/v.mp4", BUCKET, KEY)

    # Then every byte is stored, once, in order: cuts the download recovered from do not add up
    assert assert_stored_consistently(s3, stored.sha256, stored.size) == body


def test_copy_still_gives_up_when_cuts_make_no_progress(
    s3: S3Client, serve: Callable[[Script], str]
) -> None:
    # Given an output whose every answer breaks off at the same byte
    body = source_bytes(PART + 1)
    host = serve(Script(body, body, [Act(cut_at=4096)] * (ATTEMPTS + 2)))

    # When it is copied
    with pytest.raises(PermanentError) as caught:
        copier(s3, host, max_bytes=len(body)).copy(f"http://{host}/v.mp4", BUCKET, KEY)

    # Then it fails after the allowed attempts, leaving nothing behind
    assert caught.value.code == "download_incomplete"
    assert_nothing_left(s3)


def test_copy_never_joins_two_versions_when_the_output_changes_between_attempts(
    s3: S3Client, serve: Callable[[Script], str]
) -> None:
    # Given an output that changes (same length, same signature) after the first answer is cut,
    # on a server that honours Range and If-Range with strong ETags
    body = source_bytes(2 * PART + 17)
    changed = body[:24] + source_bytes(len(body), b"changed")[24:]
    acts = [Act(cut_at=PART + 4096), Act(changed=True), Act(changed=True)]
    script = Script(body, changed, acts, etags=True)
    host = serve(script)

    # When it is copied
    with pytest.raises(TransientError) as caught:
        copier(s3, host, max_bytes=len(body)).copy(f"http://{host}/v.mp4", BUCKET, KEY)

    # Then the resume named the first version, got the new one whole, saw its start differ and
    # stored nothing (a later attempt copies the new version from its start)
    assert caught.value.code == "output_changed"
    assert_nothing_left(s3)
