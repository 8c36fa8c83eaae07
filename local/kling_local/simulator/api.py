"""The API's operations, one per route: what the HTTP layer calls with a request's bytes."""

from __future__ import annotations

import hmac
import random
import threading
import time
from typing import Any

from . import history, webhooks
from .account import NOT_ACTIVATED_MESSAGE, Account
from .blobs import Blob
from .config import (
    COUNTERS,
    MARKER_DROP_SUBMIT,
    MARKER_SLOW_SUBMIT,
    OPTIMIZER_PRICE_USD,
    SimulatorConfig,
)
from .dispatch import WebhookDispatcher
from .faults import SubmitFaults
from .optimizer import PromptOptimizer
from .tasks import TERMINAL, Task, TaskBook
from .wire import Reply, envelope, error, json_object, ok, validate_t2v

RATE_LIMITED = 429


class WaveSpeedApi:
    """The service behind the routes; `stopping` cuts simulated waits short on shutdown."""

    def __init__(self, config: SimulatorConfig, stopping: threading.Event) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.book = TaskBook(config, self.lock)
        for prediction_id, status in config.seeded_predictions:
            self.book.seed(prediction_id, status, time.monotonic())
        self.account = Account(config)
        self.optimizer = PromptOptimizer()
        self._submit_faults = SubmitFaults(config, self.book.rng)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._stopping = stopping
        self.webhooks = WebhookDispatcher(config, self.count)
        # Its own stream, so turning webhook faults on leaves every other fault's dealing alone.
        self._webhook_rng = random.Random(f"{config.seed}:webhooks")

    def stats(self) -> dict[str, int]:
        with self.lock:
            return dict(self._counters)

    def count(self, counter: str, delta: int = 1) -> None:
        with self.lock:
            self._counters[counter] += delta

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the simulator stops (so stop() never hangs)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def auth_refusal(self, authorization: str) -> Reply | None:
        """The 401 for a missing, wrong or not yet activated key; None when it may pass."""
        scheme, _, token = authorization.partition(" ")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.config.api_key.encode()
        )
        if valid and self.config.activated:
            return None
        self.count("unauthorized")
        return error(401, "Unauthorized" if not valid else NOT_ACTIVATED_MESSAGE)

    def submit(self, raw: bytes, base: str = "", webhook: str | None = None) -> Reply:
        """A Kling submit: validate, apply faults and account limits, create the paid task.

        `webhook` is the submit URL's `webhook` query parameter ("How to Use Webhooks");
        without it, a `webhook_url` body field ("How to Submit Task") is taken instead.
        """
        self.wait(self.config.submit_latency_seconds)
        body, message = json_object(raw)
        if body is None:
            return error(400, message)
        params, message = validate_t2v(body)
        if params is None:
            return error(400, message)
        webhook_url, message = _webhook_url(webhook, body.get("webhook_url"))
        if message:
            return error(400, message)
        prompt: str = params["prompt"]
        now = time.monotonic()
        outage = self.account.outage_reply("submit", now)
        if outage is not None:
            return outage
        with self.lock:
            refusal = self._submit_faults.rejection(prompt) or self._admit(params, now)
            if refusal is not None:
                return refusal
            task = self.book.create(params, now, self.account.max_concurrency)
            self._counters["tasks_created"] += 1
            faults = webhooks.deal_faults(prompt, self.config, self._webhook_rng)
        if webhook_url:
            self._schedule_webhook(task, webhook_url, faults, base)
        if MARKER_DROP_SUBMIT in prompt:
            return Reply(0, None, drop=True, task=task)
        delay = self.config.slow_submit_seconds if MARKER_SLOW_SUBMIT in prompt else 0.0
        sync = body.get("enable_sync_mode") is True
        if sync:
            self._wait_terminal(task)
        return Reply(200, None, delay_seconds=delay, task=task, sync=sync)

    def _schedule_webhook(
        self, task: Task, url: str, faults: webhooks.WebhookFaults, base: str
    ) -> None:
        task.webhook_url = url

        def prediction() -> dict[str, Any]:
            # The webhook body is the prediction as the result endpoint reports it, plus the
            # task's input (the webhook pages show it).
            data = self.book.data(task, base)
            return {"id": data.pop("id"), "model": data.pop("model"),
                    "input": dict(task.params), **data}  # fmt: skip

        ends_at = task.started_monotonic + self.config.generation_seconds
        self.webhooks.schedule(task.id, url, ends_at, faults, prediction)

    def _admit(self, params: dict[str, Any], now: float) -> Reply | None:
        if self.account.rate_limited(now):
            return error(RATE_LIMITED, "Too many requests, please retry later")
        price = self.book.price_usd(params)
        refusal = self.account.charge(price, self.book.refunded_usd(now))
        if refusal is None:
            self.account.record_start(now)
        return refusal

    def submitted(self, reply: Reply, base: str) -> dict[str, Any]:
        """The envelope a submit answers with, rendered when it is sent (after any delay)."""
        assert reply.task is not None
        return envelope(self.book.data(reply.task, base, as_created=not reply.sync))

    def optimize(self, raw: bytes, base: str) -> Reply:
        self.count("optimizer_requests")
        with self.lock:
            refusal = self.account.charge(
                OPTIMIZER_PRICE_USD, self.book.refunded_usd(time.monotonic())
            )
        return refusal or self.optimizer.optimize(raw, base)

    def result(self, task_id: str, base: str) -> Reply:
        """A status read of a video task or an optimizer prediction."""
        self.count("result_requests")
        self.wait(self.config.poll_latency_seconds)
        outage = self.account.outage_reply("result", time.monotonic())
        if outage is not None:
            return outage
        optimized = self.optimizer.get(task_id)
        task = self.book.get(task_id)
        if optimized is None and task is None:
            return error(404, f"prediction {task_id} not found")
        if task is not None and self.book.take_poll_500(task):
            return error(500, "Internal server error")
        rate = self.config.poll_5xx_rate
        with self.lock:
            if rate and self.book.rng.random() < rate:
                code = self.book.rng.choice((500, 502, 503))
                return error(code, "Upstream temporarily unavailable")
        if task is not None:
            return ok(self.book.data(task, base))
        return ok(optimized)

    def history(self, params: dict[str, Any], base: str, *, defaults: bool) -> Reply:
        """A page of recent predictions (videos and optimisations), newest first."""
        items = [self.book.data(task, base) for task in self.book.all()]
        items.extend(self.optimizer.all())
        return history.query(params, items, defaults=defaults)

    def balance(self) -> Reply:
        refunded = self.book.refunded_usd(time.monotonic())
        return ok({"balance": self.account.balance_usd(refunded), "currency": "USD"})

    def webhook_secret(self) -> Reply:
        return ok({"secret": self.config.webhook_secret})

    def start_download(self, task_id: str, n: int, *, head: bool) -> tuple[Blob, bool] | None:
        """The output to serve and whether to cut it short; None when there is none (yet)."""
        started = self.book.start_download(task_id, n, head=head)
        if started is not None and not head:
            self.count("downloads_started")
        return started

    def _wait_terminal(self, task: Task) -> None:
        while not self._stopping.is_set():
            if self.book.status(task, time.monotonic()) in TERMINAL:
                return
            self._stopping.wait(0.02)


def _webhook_url(query: str | None, field: Any) -> tuple[str | None, str]:
    """The submit's webhook URL (the query parameter wins over the body field), or the 400
    message that refuses it. An empty value means none."""
    if query:
        url: Any = query
    elif field is None or field == "":
        return None, ""
    else:
        url = field
    if not isinstance(url, str):
        return None, "webhook_url must be a string"
    problem = webhooks.webhook_url_problem(url)
    return (None, problem) if problem else (url, "")
