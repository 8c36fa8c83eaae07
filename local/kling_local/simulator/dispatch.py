"""Sends the webhooks: a scheduler thread releases each delivery when its task ends (plus any
delay), a small thread pool POSTs it, and failed attempts are retried with backoff."""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .config import SimulatorConfig
from .webhooks import (
    WebhookFaults,
    WebhookRecord,
    WebhookRequest,
    build_request,
    new_webhook_id,
    request_id,
)

#: Deliveries POSTed at once; more wait their turn (the service sends from a bounded pool too).
SENDERS = 16
#: How much of a receiver's answer is read before the connection is closed.
_ANSWER_BYTES = 64 * 1024
_ACKNOWLEDGED, _REFUSED, _ABANDONED = "acknowledged", "refused", "abandoned"


@dataclass
class _Delivery:
    """The requests still to send for one task, and where the current one stands."""

    task_id: str
    url: str
    kinds: list[str]
    prediction: Callable[[], dict[str, Any]]
    genuine_id: str = field(default_factory=new_webhook_id)
    attempts: int = 0
    current_id: str = ""


def post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
    """POST `body` to `url`; the HTTP status, or OSError/HTTPException when no answer came.
    Redirects are not followed: a webhook is delivered where the submit said."""
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read(_ANSWER_BYTES)
        return int(answer.status)
    finally:
        connection.close()


def retryable(status: int | None) -> bool:
    """No answer, 429 or 5xx: the receiver may take it later. Any other answer is final."""
    return status is None or status == 429 or status >= 500


class WebhookDispatcher:
    """Schedules, sends and records webhook deliveries; `count` bumps the API's counters."""

    def __init__(self, config: SimulatorConfig, count: Callable[[str, int], None]) -> None:
        self._config = config
        self._count = count
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, _Delivery]] = []
        self._order = itertools.count()
        self._active = 0  # deliveries scheduled and not yet finished
        self._records: list[WebhookRecord] = []
        self._faults: dict[str, WebhookFaults] = {}
        self._urls: dict[str, str] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # Lifecycle

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="wavespeed-sim-webhook")
            self._thread = threading.Thread(
                target=self._release_due, name="wavespeed-sim-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop releasing deliveries; requests in flight end within their timeout."""
        with self._cond:
            thread, pool = self._thread, self._pool
            self._thread = self._pool = None
            self._stopping.set()
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=5)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # Scheduling

    def schedule(
        self,
        task_id: str,
        url: str,
        ends_at: float,
        faults: WebhookFaults,
        prediction: Callable[[], dict[str, Any]],
    ) -> None:
        """Deliver the task's webhook at `ends_at` (monotonic) plus the faults' delay;
        `prediction` renders the prediction object when it is sent."""
        with self._cond:
            self._faults[task_id] = faults
            self._urls[task_id] = url
        if faults.lost:
            self._count("webhooks_lost", 1)
        kinds = faults.kinds()
        if kinds:
            delivery = _Delivery(task_id, url, kinds, prediction)
            with self._cond:
                self._active += 1
            self._push(ends_at + faults.delay_seconds, delivery)

    def _push(self, due: float, delivery: _Delivery) -> None:
        with self._cond:
            heapq.heappush(self._queue, (due, next(self._order), delivery))
            self._cond.notify_all()

    def _release_due(self) -> None:
        with self._cond:
            while not self._stopping.is_set():
                now = time.monotonic()
                if self._queue and self._queue[0][0] <= now and self._pool is not None:
                    delivery = heapq.heappop(self._queue)[2]
                    self._pool.submit(self._attempt, delivery)
                    continue
                wait = self._queue[0][0] - now if self._queue else None
                self._cond.wait(timeout=wait)

    # Sending

    def _attempt(self, delivery: _Delivery) -> None:
        """One HTTP attempt of the delivery's current request, then what comes next."""
        kind = delivery.kinds[0]
        if delivery.attempts == 0:
            delivery.current_id = request_id(kind, delivery.genuine_id)
        # Signed per attempt, as retries carry the time they are sent at.
        request = build_request(kind, delivery.prediction(), self._config, delivery.current_id)
        delivery.attempts += 1
        self._count("webhook_requests", 1)
        status: int | None
        try:
            status = post(
                delivery.url, request.headers, request.body, self._config.webhook_timeout_seconds
            )
        except (OSError, http.client.HTTPException):
            status = None
        if retryable(status) and delivery.attempts < self._config.webhook_attempts:
            backoff = self._config.webhook_backoff_seconds * 4 ** (delivery.attempts - 1)
            self._push(time.monotonic() + backoff * self._config.time_scale, delivery)
            return
        self._finish_request(delivery, request, status)

    def _finish_request(
        self, delivery: _Delivery, request: WebhookRequest, status: int | None
    ) -> None:
        if status is not None and 200 <= status < 300:
            outcome = _ACKNOWLEDGED
        else:
            outcome = _ABANDONED if retryable(status) else _REFUSED
        self._count(f"webhooks_{outcome}", 1)
        record = WebhookRecord(
            task_id=delivery.task_id,
            kind=request.kind,
            webhook_id=request.webhook_id,
            timestamp=request.timestamp,
            status=request.status,
            url=delivery.url,
            attempts=delivery.attempts,
            response_status=status,
            outcome=outcome,
            body=request.body,
            headers=dict(request.headers),
        )
        delivery.kinds.pop(0)
        delivery.attempts = 0
        with self._cond:
            self._records.append(record)
            if not delivery.kinds:
                self._active -= 1
                self._cond.notify_all()
                return
        self._push(time.monotonic(), delivery)

    # Inspection

    def records(self, task_id: str | None = None) -> list[WebhookRecord]:
        """Every request sent so far (or a task's), in the order each one ended."""
        with self._cond:
            return [r for r in self._records if task_id is None or r.task_id == task_id]

    def faults(self, task_id: str) -> WebhookFaults | None:
        with self._cond:
            return self._faults.get(task_id)

    def url(self, task_id: str) -> str | None:
        with self._cond:
            return self._urls.get(task_id)

    def pending(self) -> int:
        """Deliveries scheduled (or in flight) that have not finished."""
        with self._cond:
            return self._active

    def wait_idle(self, timeout: float) -> bool:
        """Block until every scheduled delivery has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=remaining)
            return True
