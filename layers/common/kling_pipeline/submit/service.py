"""The submit function's record handler: intake decides, admission pays, refusal parks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ..errors import PermanentError, TransientError
from ..job.prompt_file import PromptFileRejected, parse_prompt_file
from ..job.record import Outcome, Stage
from ..observability import logger
from ..settings import Settings
from .admission import Admission
from .intake import Admit, FileFanOut, ReceivedMessage, file_refusal, plan_file, take_in
from .pacing import Resend, pacing_delay
from .pacing_table import message_attributes
from .ports import Ledger, PromptFiles, Queue
from .refusal import Redrive, Refusal, Refuser

#: Codes of refusals that paid nothing and that fixing the cause lets a DLQ redrive run.
REDRIVABLE_CODES = ("budget_exceeded", "api_key_missing")


class SubmitService:
    """Handles one SQS record; raises only TransientError (SQS redelivers that record)."""

    def __init__(
        self,
        settings: Settings,
        *,
        admission: Admission,
        refuser: Refuser,
        ledger: Ledger,
        queue: Queue,
        prompt_files: PromptFiles,
        resend: Resend | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._admission = admission
        self._refuser = refuser
        self._ledger = ledger
        self._queue = queue
        self._files = prompt_files
        self._resend = resend
        self._rng = rng or random.Random()

    def handle(self, record: SQSRecord) -> None:
        self.handle_message(ReceivedMessage.from_record(record), message_attributes(record))

    def handle_message(
        self, message: ReceivedMessage, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """`attributes`: the message's own attributes, sent back with a job re-queued for pacing."""
        intake = take_in(message)
        if isinstance(intake, FileFanOut):
            self._fan_out(intake, message)
        elif isinstance(intake, Admit):
            self._admit(intake, message, attributes or {})
        else:
            self._refuser.refuse(intake, message)

    def record_handler(self) -> Callable[[SQSRecord], Awaitable[None]]:
        """An async record handler for Powertools' AsyncBatchProcessor: the batch's records
        are submitted side by side, at most `submit_concurrency` at once, each in a thread
        (the AWS and HTTP clients are blocking)."""
        limit = asyncio.Semaphore(self._settings.submit_concurrency)

        async def handle(record: SQSRecord) -> None:
            async with limit:
                await asyncio.to_thread(self.handle, record)

        return handle

    def _admit(
        self, intake: Admit, message: ReceivedMessage, attributes: Mapping[str, Any]
    ) -> None:
        job = intake.job
        if intake.redriven:
            # A message redriven from the DLQ: a refusal that can be retried gets a new chance.
            self._ledger.reopen(job.job_id)
        try:
            self._admission.admit(job, intake.source)
        except PermanentError as exc:
            redrive = Redrive() if exc.code in REDRIVABLE_CODES else None
            self._refuser.refuse(self._failed(intake, exc, redrive=redrive), message)
        except TransientError as exc:
            delay = pacing_delay(exc, self._settings.rate_window_s, self._rng)
            if delay is not None and self._resend is not None:
                # Waiting for the account's start rate is not a failed attempt: the identical
                # message goes back on the queue and this receive succeeds (is deleted), so
                # SQS's receive count, which leads to the DLQ, never grows for pacing.
                self._resend.resend(message.body, attributes, delay)
                logger.info("job re-queued for pacing", extra={"job_id": intake.job.job_id})
                return
            if not self._after_transient(intake, exc, message):
                raise

    @staticmethod
    def _failed(
        intake: Admit,
        error: PermanentError,
        *,
        redrive: Redrive | None,
        request_id: str | None = None,
        paid: bool = False,
    ) -> Refusal:
        job = intake.job
        return Refusal(
            job_id=job.job_id,
            status=Outcome.FAILED,
            error=error.detail(),
            source=intake.source,
            input=job.input,
            metadata=job.metadata,
            request_id=request_id,
            paid_duration=job.request.duration if paid else None,
            redrive=redrive,
        )

    def _after_transient(
        self, intake: Admit, exc: TransientError, message: ReceivedMessage
    ) -> bool:
        """Backs off this message only; on its last allowed receive it is settled here: one
        `failed` notification and the message parked with its reason. True when settled."""
        if message.receive_count < self._settings.max_receive_count:
            base = self._settings.retry_base_s
            backoff = base * 2 ** (message.receive_count - 1)
            self._queue.retry_later(
                message.receipt_handle, int(min(900, backoff + self._rng.uniform(0, base)))
            )
            return False
        if exc.code == "in_progress":
            return True  # a duplicate: the delivery that owns the job will notify
        record = self._ledger.get(intake.job.job_id)
        paid = record is not None and record.paid
        error = PermanentError(
            f"gave up after {message.receive_count} attempts ({exc.code}: {exc.message}); "
            "the message is in the dead-letter queue and can be redriven",
            code="retries_exhausted",
        )
        refusal = self._failed(
            intake,
            error,
            redrive=Redrive(Stage.SUBMITTED if paid else None),
            request_id=record.prediction_id if record else None,
            paid=paid,
        )
        self._refuser.refuse(refusal, message)
        return True

    def _fan_out(self, intake: FileFanOut, message: ReceivedMessage) -> None:
        """Reads each uploaded prompt file and queues one job message per valid entry."""
        if not intake.uploads:
            logger.info("s3 test event ignored")
        for upload in intake.uploads:
            try:
                data = self._files.read(upload.bucket, upload.key, upload.size)
                entries = parse_prompt_file(
                    upload.key,
                    data,
                    max_bytes=self._settings.max_prompt_file_bytes,
                    max_jobs=self._settings.max_jobs_per_file,
                )
            except PromptFileRejected as exc:
                self._refuser.refuse(file_refusal(upload, exc.detail()), message)
                continue
            plan = plan_file(upload, entries)
            for refusal in plan.refusals:
                self._refuser.refuse(refusal, None)
            self._queue.enqueue(plan.messages)
            logger.info("prompt file queued", extra={"key": upload.key, "jobs": len(plan.messages)})
