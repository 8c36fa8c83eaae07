"""Turns queue records into paid WaveSpeed tasks, at most one per job id; starts workflows."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from .errors import (
    BudgetExceeded,
    PermanentError,
    SubmitOutcomeUnknown,
    TransientError,
    ValidationError,
)
from .ledger import RUNNING, SUBMITTED, SUBMITTING, JobLedger
from .models import (
    JOB_ID_PATTERN,
    FileEntry,
    JobRequest,
    Json,
    Notification,
    PromptFileRejected,
    api_payload,
    file_job_id,
    message_job_id,
    parse_message_body,
    parse_prompt_file,
    requested_job_id,
    wavespeed_cost,
)
from .notify import Notifier
from .observability import logger, metrics
from .settings import Settings
from .wavespeed import WaveSpeedClient

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef
    from mypy_boto3_stepfunctions import SFNClient

SOURCE_ATTRIBUTE = "kp-source"
#: Set on every parked message: a redrive of it is the same job, never a new paid one.
PARKED_JOB_ATTRIBUTE = "job_id"
RETRY_BASE_S = 30
SUBMIT_HINT = (
    "Check your WaveSpeed dashboard for a Kling task created around {at} with this prompt "
    "before resubmitting; resubmit with a new job_id only if none exists."
)


@dataclass(frozen=True)
class Delivery:
    """One SQS record as the submit function receives it."""

    message_id: str
    body: str
    receipt_handle: str
    receive_count: int
    attributes: dict[str, Any]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Delivery:
        return cls(
            message_id=str(record.get("messageId", "")),
            body=str(record.get("body", "")),
            receipt_handle=str(record.get("receiptHandle", "")),
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
            attributes=record.get("messageAttributes") or {},
        )


def _attribute(delivery: Delivery, name: str) -> str | None:
    value = delivery.attributes.get(name) or {}
    text = value.get("stringValue") or value.get("StringValue")
    return str(text) if text is not None else None


def _parked_job_id(delivery: Delivery) -> str | None:
    """The job id a redriven message was parked under (its message id is new after a redrive)."""
    job_id = _attribute(delivery, PARKED_JOB_ATTRIBUTE)
    return job_id if job_id and JOB_ID_PATTERN.match(job_id) else None


def _loose_job_id(body: str, delivery: Delivery) -> str:
    """The job id a rejected message asked for, when readable; else one derived from delivery."""
    return requested_job_id(body) or _parked_job_id(delivery) or f"msg-{delivery.message_id}"


def _echo(body: str) -> Json:
    """What a rejected message asked for, as far as it can be read."""
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return {} if body.lstrip().startswith("{") else {"prompt": body[:2500]}
    return decoded if isinstance(decoded, dict) else {}


class SubmissionService:
    """Validates, deduplicates and submits jobs; permanent problems are notified and parked."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: JobLedger,
        wavespeed: WaveSpeedClient,
        notifier: Notifier,
        sqs: SQSClient,
        s3: S3Client,
        sfn: SFNClient,
        clock: Callable[[], float] = time.time,
        retry_base_s: float = RETRY_BASE_S,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._api = wavespeed
        self._notifier = notifier
        self._sqs = sqs
        self._s3 = s3
        self._sfn = sfn
        self._clock = clock
        self._retry_base_s = retry_base_s

    # ----------------------------------------------------------------------------------- batch
    def process_batch(self, records: list[dict[str, Any]]) -> dict[str, BaseException | None]:
        """Handles the batch's records concurrently; maps message id to its failure, if any."""
        deliveries = [Delivery.from_record(record) for record in records]
        workers = min(self._settings.submit_concurrency, max(1, len(deliveries)))
        with ThreadPoolExecutor(workers, thread_name_prefix="submit") as pool:
            futures = {d.message_id: pool.submit(self.handle_delivery, d) for d in deliveries}
        return {message_id: future.exception() for message_id, future in futures.items()}

    def handle_delivery(self, delivery: Delivery) -> None:
        """One record; raises only TransientError (SQS redelivers), everything else is settled."""
        body = delivery.body
        if body.lstrip().startswith("{") and ('"Records"' in body or "s3:TestEvent" in body):
            event = self._s3_event(body)
            if event is not None:
                self.fan_out_prompt_files(event, delivery)
                return
        source = self._source_of(delivery)
        try:
            job = parse_message_body(body)
        except ValidationError as exc:
            job_id = _loose_job_id(body, delivery)
            self._refuse(job_id, "rejected", exc, source, _echo(body), {}, delivery)
            return
        parked_as = _parked_job_id(delivery)
        job = job.with_job_id(job.job_id or parked_as or message_job_id(job, delivery.message_id))
        if parked_as:
            # A message redriven from the DLQ: a refusal that can be retried gets a new chance.
            self._ledger.reopen(job.job_id or "")
        try:
            self.submit_job(job, source)
        except BudgetExceeded as exc:
            self._refuse(
                job.job_id or "", "failed", exc, source, job.input_view(), job.metadata, delivery
            )
            self._ledger.mark_redrivable(job.job_id or "", resume_state=None)
        except PermanentError as exc:
            self._refuse(
                job.job_id or "", "failed", exc, source, job.input_view(), job.metadata, delivery
            )
            if exc.code == "api_key_missing":
                # Nothing was sent: once the key is set, a redrive runs these jobs.
                self._ledger.mark_redrivable(job.job_id or "", resume_state=None)
        except TransientError as exc:
            if not self._after_transient(job, source, exc, delivery):
                raise

    @staticmethod
    def _s3_event(body: str) -> Json | None:
        try:
            decoded = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(decoded, dict):
            return None
        if decoded.get("Event") == "s3:TestEvent":
            return decoded
        records = decoded.get("Records")
        if isinstance(records, list) and all(
            isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records
        ):
            return decoded
        return None

    def _source_of(self, delivery: Delivery) -> Json:
        raw = _attribute(delivery, SOURCE_ATTRIBUTE)
        if raw:
            try:
                source = json.loads(raw)
                if isinstance(source, dict) and source.get("type") == "s3":
                    return source
            except json.JSONDecodeError:
                pass
        return {"type": "sqs", "message_id": delivery.message_id}

    # ------------------------------------------------------------------------------ submission
    def submit_job(self, job: JobRequest, source: Json) -> str | None:
        """Submits `job` unless its id was seen; returns the prediction id when it ran now."""
        job_id = job.job_id or ""
        self._api.check_credentials()
        existing = self._ledger.claim_submission(
            job_id, lease_s=self._settings.submit_lease_s, job=job.to_message(), source=source
        )
        if existing is not None:
            self._resume(existing.state, existing.lease_expired, existing.item, job_id)
            return None

        price = job.price_usd()
        day = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d")
        capped = self._settings.daily_budget_usd > 0
        if capped and not self._ledger.reserve_budget(day, price, self._settings.daily_budget_usd):
            self._ledger.release(job_id)
            raise BudgetExceeded(
                f"submitting this ${price:.2f} job would pass the daily budget of "
                f"${self._settings.daily_budget_usd:.2f} for {day}; the message is parked in "
                "the dead-letter queue for redrive"
            )
        prompt, enhancement = self._enhanced_prompt(job)
        sent_at = datetime.now(UTC).isoformat()
        try:
            prediction_id = self._api.submit_generation(api_payload(job, prompt))
        except SubmitOutcomeUnknown as exc:
            raise SubmitOutcomeUnknown(f"{exc.message}. {SUBMIT_HINT.format(at=sent_at)}") from None
        except (TransientError, PermanentError):
            # Provably not accepted (429, refused, rejected): nothing was paid.
            self._ledger.release(job_id)
            if capped:
                self._ledger.refund_budget(day, price)
            raise
        metrics.add_metric(name="JobsSubmitted", unit="Count", value=1)
        metrics.add_metric(name="DollarsCommitted", unit="Count", value=price)
        execution_input = self._execution_input(job, source, prediction_id, enhancement)
        self._ledger.record_prediction(job_id, prediction_id, execution_input)
        logger.info("task submitted", extra={"job_id": job_id, "prediction_id": prediction_id})
        self._start(job_id, execution_input)
        return prediction_id

    def _resume(self, state: str, lease_expired: bool, item: Json, job_id: str) -> None:
        if state == SUBMITTING:
            if not lease_expired:
                raise TransientError(
                    "another delivery is submitting this job right now", code="in_progress"
                )
            raise SubmitOutcomeUnknown(
                "an earlier attempt stopped while submitting this job, after the request may "
                "have reached WaveSpeed. " + SUBMIT_HINT.format(at=item["created_at"]["S"])
            )
        if state == SUBMITTED:
            # Crashed after the paid POST but before the workflow started: start it now.
            self._start(job_id, json.loads(item["execution_input"]["S"]))
            return
        metrics.add_metric(name="JobsDeduplicated", unit="Count", value=1)
        logger.info("duplicate delivery ignored", extra={"job_id": job_id, "state": state})

    def _start(self, job_id: str, execution_input: Json) -> None:
        try:
            answer = self._sfn.start_execution(
                stateMachineArn=self._settings.state_machine_arn,
                name=job_id,
                input=json.dumps(execution_input),
            )
            arn = answer["executionArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise TransientError(f"could not start the workflow: {exc}") from None
            arn = f"{self._settings.state_machine_arn}:{job_id}".replace(
                ":stateMachine:", ":execution:"
            )
        try:
            self._ledger.mark_started(job_id, arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def _enhanced_prompt(self, job: JobRequest) -> tuple[str, Json | None]:
        if not job.enhance_prompt:
            return job.prompt, None
        try:
            enhanced = self._api.enhance_prompt(job.prompt)
        except (TransientError, PermanentError) as exc:
            logger.warning("prompt optimizer failed", extra={"job_id": job.job_id})
            return job.prompt, {
                "status": "failed",
                "error": exc.message,
                "note": "the job was submitted with the original prompt",
            }
        return enhanced, {"status": "applied", "enhanced_prompt": enhanced}

    def _execution_input(
        self, job: JobRequest, source: Json, prediction_id: str, enhancement: Json | None
    ) -> Json:
        now = self._clock()
        schedule = self._settings.poll
        return {
            "job": {
                "job_id": job.job_id,
                "input": job.input_view(),
                "source": source,
                "metadata": job.metadata,
                "prompt_enhancement": enhancement,
                "submitted_at": datetime.fromtimestamp(now, UTC).isoformat(),
            },
            "prediction": {"id": prediction_id, "submitted_at": now},
            "schedule": {
                "first_wait_s": schedule.first_wait_s,
                "interval_s": schedule.interval_s,
                "backoff": schedule.backoff,
                "max_interval_s": schedule.max_interval_s,
                "min_interval_s": schedule.min_interval_s,
                "deadline_at": now + schedule.deadline_s,
            },
            "poll": {"status": "waiting", "wait_seconds": schedule.first_wait_s, "polls": 0},
            "error": None,
        }

    # ------------------------------------------------------------------------- failure paths
    def _refuse(
        self,
        job_id: str,
        status: str,
        error: PermanentError,
        source: Json,
        echo: Json,
        metadata: Json,
        delivery: Delivery | None,
        *,
        request_id: str | None = None,
        paid_job: JobRequest | None = None,
    ) -> None:
        """One terminal notification, then the message is parked in the DLQ with its reason."""
        detail: Json = {"code": error.code, "message": error.message}
        if isinstance(error, ValidationError):
            detail["field"] = error.field
        self._notifier.publish_outcome(
            Notification(
                job_id=job_id,
                status=status,
                input=echo,
                source=source,
                request_id=request_id,
                error=detail,
                metadata=metadata if isinstance(metadata, dict) else {},
                cost=wavespeed_cost(paid_job, paid=paid_job is not None),
            )
        )
        if delivery is None or not self._ledger.claim_park(job_id):
            return  # nothing to park, or a duplicate delivery whose twin parked the job
        try:
            self._park(delivery, job_id, error)
        except ClientError:
            self._ledger.release_park(job_id)
            raise TransientError("could not park the message in the dead-letter queue") from None

    def _park(self, delivery: Delivery, job_id: str, error: PermanentError) -> None:
        attributes: dict[str, Any] = {
            "reason": {"DataType": "String", "StringValue": error.message[:1000] or error.code},
            "error_code": {"DataType": "String", "StringValue": error.code},
            PARKED_JOB_ATTRIBUTE: {"DataType": "String", "StringValue": job_id},
        }
        source = _attribute(delivery, SOURCE_ATTRIBUTE)
        if source:
            attributes[SOURCE_ATTRIBUTE] = {"DataType": "String", "StringValue": source}
        self._sqs.send_message(
            QueueUrl=self._settings.dead_letter_queue_url,
            MessageBody=delivery.body or " ",
            MessageAttributes=attributes,
        )

    def _after_transient(
        self, job: JobRequest, source: Json, exc: TransientError, delivery: Delivery
    ) -> bool:
        """Backs off this message only; on its last allowed receive it is settled here: one
        `failed` notification and the message parked with its reason. True when settled."""
        if delivery.receive_count >= self._settings.max_receive_count:
            if exc.code == "in_progress":
                return True  # a duplicate: the delivery that owns the job will notify
            job_id = job.job_id or ""
            record = self._ledger.get(job_id)
            paid = record is not None and record.state in (SUBMITTED, RUNNING)
            error = PermanentError(
                f"gave up after {delivery.receive_count} attempts ({exc.code}: {exc.message}); "
                "the message is in the dead-letter queue and can be redriven",
                code="retries_exhausted",
            )
            self._refuse(
                job_id,
                "failed",
                error,
                source,
                job.input_view(),
                job.metadata,
                delivery,
                request_id=record.prediction_id if record else None,
                paid_job=job if paid else None,
            )
            self._ledger.mark_redrivable(job_id, resume_state=SUBMITTED if paid else None)
            return True
        if delivery.receipt_handle and self._settings.job_queue_url:
            backoff = self._retry_base_s * 2 ** (delivery.receive_count - 1)
            delay = int(min(900, backoff + random.uniform(0, self._retry_base_s)))
            try:
                self._sqs.change_message_visibility(
                    QueueUrl=self._settings.job_queue_url,
                    ReceiptHandle=delivery.receipt_handle,
                    VisibilityTimeout=delay,
                )
            except ClientError:
                logger.warning("could not shorten the retry delay", extra={"job_id": job.job_id})
        return False

    # ---------------------------------------------------------------------------- prompt files
    def fan_out_prompt_files(self, event: Json, delivery: Delivery) -> None:
        """Reads each uploaded prompt file and queues one job message per valid entry."""
        if event.get("Event") == "s3:TestEvent":
            logger.info("s3 test event ignored")
            return
        for record in event.get("Records", []):
            s3 = record.get("s3", {})
            bucket = s3.get("bucket", {}).get("name", "")
            obj = s3.get("object", {})
            key = unquote_plus(obj.get("key", ""))
            marker = str(obj.get("sequencer") or obj.get("versionId") or obj.get("eTag") or "")
            source: Json = {"type": "s3", "bucket": bucket, "key": key}
            try:
                entries = self._read_prompt_file(bucket, key, int(obj.get("size") or 0))
            except PromptFileRejected as exc:
                job_id = file_job_id(bucket, key, marker, 0)
                self._refuse(job_id, "rejected", exc, source, {}, {}, delivery)
                continue
            self._queue_entries(entries, bucket, key, marker, source)

    def _read_prompt_file(self, bucket: str, key: str, size: int) -> list[FileEntry]:
        limit = self._settings.max_prompt_file_bytes
        if size > limit:
            raise PromptFileRejected(f"{key}: file is {size} bytes, the limit is {limit}")
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
            data = body.read(limit + 1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise PromptFileRejected(
                    f"{key}: the file was deleted before it was read"
                ) from None
            raise TransientError(f"could not read {key}: {code}") from None
        return parse_prompt_file(
            key, data, max_bytes=limit, max_jobs=self._settings.max_jobs_per_file
        )

    def _queue_entries(
        self, entries: list[FileEntry], bucket: str, key: str, marker: str, source: Json
    ) -> None:
        messages: list[SendMessageBatchRequestEntryTypeDef] = []
        for entry in entries:
            where = "line" if key.lower().endswith(".jsonl") else "item"
            entry_source = {**source, where: entry.position}
            if entry.job is not None and entry.job.job_id:
                job_id = entry.job.job_id
            else:
                job_id = file_job_id(bucket, key, marker, entry.position)
            if entry.error is not None and entry.requested_job_id:
                job_id = entry.requested_job_id
            if entry.error is not None:
                error = ValidationError(entry.error.field, entry.error.rule)
                error.message = f"{entry.label}: {entry.error.message}"
                self._refuse(job_id, "rejected", error, entry_source, {}, {}, None)
                continue
            assert entry.job is not None
            messages.append(
                {
                    "Id": str(len(messages)),
                    "MessageBody": json.dumps(entry.job.with_job_id(job_id).to_message()),
                    "MessageAttributes": {
                        SOURCE_ATTRIBUTE: {
                            "DataType": "String",
                            "StringValue": json.dumps(entry_source),
                        }
                    },
                }
            )
        for start in range(0, len(messages), 10):
            batch: list[SendMessageBatchRequestEntryTypeDef] = [
                {**m, "Id": str(i)} for i, m in enumerate(messages[start : start + 10])
            ]
            answer = self._sqs.send_message_batch(
                QueueUrl=self._settings.job_queue_url, Entries=batch
            )
            if answer.get("Failed"):
                raise TransientError(f"could not queue {len(answer['Failed'])} jobs of {key}")
        logger.info("prompt file queued", extra={"key": key, "jobs": len(messages)})
