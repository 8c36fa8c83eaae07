"""SHA-256 of a download computed on a thread of its own, so receiving and hashing overlap."""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundHasher:
    """Feeds one SHA-256, in order, from a single worker thread.

    Hashing inline in the download thread serialised it with the socket reads; hashlib lets
    go of the GIL on large inputs, so on a thread of its own the hash of one piece runs while
    the next piece is received. The price is a rule for the caller: bytes handed to `feed`
    are read later, so they must stay unchanged until `settle` (or `close`) has returned.
    """

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self._worker: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        #: Bytes handed over so far, hashed or not yet.
        self.fed = 0

    def feed(self, data: memoryview) -> None:
        """Queues `data` after everything fed before; it is read some time before `settle`."""
        if not data:
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        # One worker runs the updates in submission order: the digest is of the bytes in order.
        self._pending.append(self._worker.submit(self._hasher.update, data))
        self.fed += len(data)

    def settle(self) -> None:
        """Returns once every byte fed has been hashed; the caller may then reuse them."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def digest(self) -> bytes:
        """The digest of every byte fed so far."""
        self.settle()
        return self._hasher.digest()

    def hexdigest(self) -> str:
        self.settle()
        return self._hasher.hexdigest()

    def close(self) -> None:
        """Stops the worker once it no longer reads anything fed; the digest stays readable.

        Work in flight is waited for, not abandoned: it reads the caller's buffer, which the
        caller may reuse as soon as this returns.
        """
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
