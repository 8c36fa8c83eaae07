"""Unit tests: the download's SHA-256 computed on a thread of its own, in order."""

from __future__ import annotations

import hashlib
import random
import threading

from kling_pipeline.finalize.digest import BackgroundHasher


def hashing_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("sha256")}


def test_digest_is_sha256_of_all_bytes_when_fed_in_uneven_pieces() -> None:
    # Given 3 MB of varied bytes cut into uneven pieces, some empty
    rng = random.Random(7)
    data = rng.randbytes(3_000_000)
    hasher = BackgroundHasher()

    # When feeding them in order
    offset = 0
    while offset < len(data):
        size = rng.choice([0, 1, 4095, 65_536, 1_048_576])
        hasher.feed(memoryview(data)[offset : offset + size])
        offset += size

    # Then the digest is that of the whole, and every byte was counted once
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.fed == len(data)
    hasher.close()


def test_digest_holds_each_feed_as_it_was_when_buffer_reused_after_settle() -> None:
    # Given one 8 MiB buffer, refilled right after each settle as a reader's caller refills
    # its part buffer (a refill is far quicker than hashing 8 MiB)
    size = 8 * 1024 * 1024
    fills = [bytes([value]) * size for value in range(1, 6)]
    buffer = bytearray(size)
    hasher = BackgroundHasher()

    # When feeding it five times with different contents
    for fill in fills:
        buffer[:] = fill
        hasher.feed(memoryview(buffer)[: size // 2])
        hasher.feed(memoryview(buffer)[size // 2 :])
        hasher.settle()

    # Then each refill was hashed as it was when fed, not as it was later
    assert hasher.digest() == hashlib.sha256(b"".join(fills)).digest()
    hasher.close()


def test_digest_is_of_no_bytes_when_nothing_fed() -> None:
    # Given / When a hasher fed nothing
    before = hashing_threads()
    hasher = BackgroundHasher()

    # Then its digest is that of the empty output, and no thread was started for it
    assert hasher.hexdigest() == hashlib.sha256(b"").hexdigest()
    assert hashing_threads() == before
    hasher.close()


def test_worker_stops_and_digest_stays_when_closed() -> None:
    # Given a hasher fed 8 MB
    before = hashing_threads()
    data = bytes(range(256)) * 32_768
    hasher = BackgroundHasher()
    hasher.feed(memoryview(data))

    # When closing it without settling first
    hasher.close()

    # Then its thread is gone, and what was fed was hashed in full before it went
    assert hashing_threads() == before
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
