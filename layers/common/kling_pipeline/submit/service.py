"""The submit function's record handler: intake decides, admission pays, refusal parks."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ..errors import PermanentError, TransientError
from ..job.prompt_file import PromptFileRejected, parse_prompt_file
from ..job.record import Outcome, Stage
from ..observability import logger
from ..settings import Settings
from .admission import NOT_STARTED, Admission, JobIdConflict, no_deadline
from .batch import concurrent_records
from .intake import (
    Admit,
    FileFanOut,
    PromptUpload,
    ReceivedMessage,
    file_refusal,
    plan_file,
    take_in,
)
from .pacing import Resend, pacing_delay
from .pacing_table import message_attributes
from .ports import Ledger, PromptFiles, Queue
from .refusal import Redrive, Refusal, Refuser
from .signing import AttributeSigner

#: Codes of refusals that paid nothing and that fixing the cause lets a DLQ redrive run
#: (a key set, activated or topped up; a new budget day).
REDRIVABLE_CODES = (
    "budget_exceeded",
    "api_key_missing",
    "api_key_not_activated",
    "insufficient_balance",
)


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
        signer: AttributeSigner,
        resend: Resend | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._admission = admission
        self._refuser = refuser
        self._ledger = ledger
        self._queue = queue
        self._files = prompt_files
        self._signer = signer
        self._resend = resend
        self._rng = rng or random.Random()

    def handle(self, record: SQSRecord, time_left: Callable[[], float] = no_deadline) -> None:
        message = ReceivedMessage.from_record(record, self._signer)
        self.handle_message(message, time_left, message_attributes(record))

    def handle_message(
        self,
        message: ReceivedMessage,
        time_left: Callable[[], float] = no_deadline,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """`time_left`: seconds left in this invocation; a paid POST that could not finish
        in it is not started (the message is left for SQS to deliver again). `attributes`: the
        message's own, sent back unchanged with a job re-queued for pacing."""
        intake = take_in(message)
        if isinstance(intake, FileFanOut):
            self._fan_out(intake, message)
        elif isinstance(intake, Admit):
            self._admit(intake, message, time_left, attributes or {})
        else:
            self._refuser.refuse(intake, message)

    def record_handler(self) -> Callable[..., Awaitable[None]]:
        """An async record handler for Powertools' AsyncBatchProcessor: the batch's records
        are submitted side by side, at most `submit_concurrency` at once (see `batch`)."""
        return concurrent_records(self.handle, self._settings.submit_concurrency)

    def _admit(
        self,
        intake: Admit,
        message: ReceivedMessage,
        time_left: Callable[[], float],
        attributes: Mapping[str, Any],
    ) -> None:
        job = intake.job
        if intake.redriven:
            # A message redriven from the DLQ: a refusal that can be retried gets a new chance.
            self._ledger.reopen(job.job_id)
        try:
            self._admission.admit(job, intake.source, time_left=time_left)
        except JobIdConflict as exc:
            self._refuser.park_conflict(job.job_id, exc.detail(), message)
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
            fingerprint=job.fingerprint,
        )

    def _after_transient(
        self, intake: Admit, exc: TransientError, message: ReceivedMessage
    ) -> bool:
        """Backs off this message only; on its last allowed receive it is settled here: one
        `failed` notification and the message parked with its reason. True when settled."""
        if message.receive_count < self._settings.max_receive_count:
            self._retry_later(message, now=exc.code == NOT_STARTED)
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

    def _retry_later(self, message: ReceivedMessage, *, now: bool = False) -> None:
        if now:  # never started: the next invocation can take it at once
            self._queue.retry_later(message.receipt_handle, 0)
            return
        base = self._settings.retry_base_s
        backoff = base * 2 ** (message.receive_count - 1)
        self._queue.retry_later(
            message.receipt_handle, int(min(900, backoff + self._rng.uniform(0, base)))
        )

    def _fan_out(self, intake: FileFanOut, message: ReceivedMessage) -> None:
        """Reads each uploaded prompt file and queues one job message per valid entry."""
        if not intake.uploads:
            logger.info("s3 test event ignored")
        for upload in intake.uploads:
            if upload.folder_marker:
                logger.info("folder marker ignored", extra={"key": upload.key})
                continue
            try:
                check_origin(self._settings, upload)
                data = self._files.read(upload)
                entries = parse_prompt_file(
                    upload.key,
                    data,
                    max_bytes=self._settings.max_prompt_file_bytes,
                    max_jobs=self._settings.max_jobs_per_file,
                )
            except PromptFileRejected as exc:
                self._refuser.refuse(file_refusal(upload, exc.detail()), message)
                continue
            except TransientError as exc:
                if message.receive_count < self._settings.max_receive_count:
                    self._retry_later(message)
                    raise
                failure = PermanentError(
                    f"{upload.key}: could not be read after {message.receive_count} attempts "
                    f"({exc.message}); the event is in the dead-letter queue and can be "
                    "redriven",
                    code="prompt_file_unreadable",
                )
                refusal = file_refusal(upload, failure.detail(), status=Outcome.FAILED)
                self._refuser.refuse(refusal, message)
                continue
            plan = plan_file(upload, entries)
            for refusal in plan.refusals:
                self._refuser.refuse(refusal, None)
            self._queue.enqueue(
                [(body, self._signer.sign(body, internal)) for body, internal in plan.messages]
            )
            logger.info("prompt file queued", extra={"key": upload.key, "jobs": len(plan.messages)})


def check_origin(settings: Settings, upload: PromptUpload) -> None:
    """Anyone who may send to the queue can write an S3-event-shaped message: only the
    configured prompts bucket and prefix are read (and only versions that exist)."""
    bucket, prefix = settings.prompts_bucket, settings.prompts_prefix
    if (bucket and upload.bucket != bucket) or not upload.key.startswith(prefix):
        raise PromptFileRejected(
            f"s3://{upload.bucket}/{upload.key}: not under the pipeline's prompts location "
            f"({prefix} in its prompts bucket); the event was not acted on"
        )
