"""A batch's records submitted side by side, each on a thread of its own, within a cap."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from .admission import no_deadline

#: Names the record threads apart in logs and thread dumps.
_THREAD_NUMBERS = itertools.count(1)


def concurrent_records(
    handle: Callable[[SQSRecord, Callable[[], float]], None], concurrency: int
) -> Callable[..., Awaitable[None]]:
    """An async record handler running `handle(record, time_left)` in a thread per record, at
    most `concurrency` at once. Powertools hands it the Lambda context, whose remaining time
    guards each paid POST (the clients are blocking, hence threads)."""
    # Not asyncio.to_thread: the loop's default executor has min(32, CPUs + 4) threads,
    # 6 on a 2-vCPU function, which would split a 10-record batch into two rounds of paid
    # POSTs. Nor a pool: nothing tells a record handler that its batch ended, and an idle
    # pool's threads live on until the garbage collector finds it (a failed record's
    # traceback keeps it in a reference cycle), piling up over warm invocations. Each
    # record has a thread of its own, ended before the record is reported; the cap is the
    # batch's own, as a Lambda container runs one batch at a time (local runs emulate
    # concurrent functions in one process).
    # A handler may serve several batches; an asyncio semaphore belongs to one event loop.
    slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
        weakref.WeakKeyDictionary()
    )

    async def run_record(record: SQSRecord, lambda_context: Any = None) -> None:
        time_left = _time_left(lambda_context)
        # As asyncio.to_thread does: the record runs with the caller's context variables.
        run = functools.partial(contextvars.copy_context().run, handle, record, time_left)
        loop = asyncio.get_running_loop()
        cap = slots.setdefault(loop, asyncio.Semaphore(concurrency))
        async with cap:
            await _in_own_thread(run)

    return run_record


async def _in_own_thread(call: Callable[[], None]) -> None:
    """Runs `call` on a new thread and returns (or raises) once that thread has ended."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting record as is
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    thread = threading.Thread(target=run, name=f"submit-{next(_THREAD_NUMBERS)}")
    thread.start()
    await done
    # Its last step was handing the outcome over: the join is immediate.
    thread.join()


def _time_left(context: Any) -> Callable[[], float]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return no_deadline
    return lambda: float(remaining()) / 1000.0
