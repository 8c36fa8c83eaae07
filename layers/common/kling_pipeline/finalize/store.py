"""The finalize step: store a finished job's videos with a job.json sidecar, notify the outcome.

Money rules kept here: a generation WaveSpeed refunds (failed, timed out) is reported
`paid: false` with the reason and its daily-budget reservation is given back; a video that
exists at WaveSpeed but could not be stored is reported with its source URL and the time
WaveSpeed deletes it (7 days after creation), so the re-store command can still save it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from ..errors import ErrorDetail, PermanentError
from ..job.notification import job_cost, workflow_notification
from ..job.record import Outcome
from ..job.workflow import COMPLETED, FAILED, STORED, Delivery, WorkflowState
from ..notify import Notifier
from ..observability import logger, metrics
from ..settings import Settings
from ..types import Json
from .upload import StoredObject, VideoCopier

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: WaveSpeed keeps a task's outputs this long after it created the task.
SOURCE_LIFETIME = timedelta(days=7)
#: What WaveSpeed charges for one run of its prompt optimizer.
OPTIMIZER_USD = 0.001


class JobAccounts(Protocol):
    """The ledger's part in finalizing (`job.ledger.JobLedger`)."""

    def refund_budget(self, day: str, amount_usd: float) -> None: ...

    def reopen_failed(self, job_id: str) -> bool: ...


def job_cost_of(state: WorkflowState, *, paid: bool, polls: int, stored_bytes: int = 0) -> Json:
    """The job's cost: the generation (when charged), the prompt optimizer's run, AWS."""
    cost = job_cost(state.job.duration, paid=paid, polls=polls, stored_bytes=stored_bytes)
    if (state.job.prompt_enhancement or {}).get("status") == "applied":
        cost["prompt_optimizer_usd"] = OPTIMIZER_USD
        cost["wavespeed_usd"] = round(float(cost["wavespeed_usd"]) + OPTIMIZER_USD, 6)
    return cost


def source_outputs(state: WorkflowState, now: float) -> list[Json]:
    """The outputs as they still are at WaveSpeed, with when WaveSpeed deletes them."""
    created: datetime | None = None
    for stamp in (state.poll.created_at, state.job.submitted_at):
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            created = created if created.tzinfo else created.replace(tzinfo=UTC)
            break
    expires = (created or datetime.fromtimestamp(now, UTC)) + SOURCE_LIFETIME
    return [
        {"index": index, "source_url": url, "source_expires_at": expires.isoformat()}
        for index, url in enumerate(state.poll.outputs, start=1)
    ]


class Finalizer:
    """Copies outputs into the videos bucket and publishes the job's one terminal outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        s3: S3Client,
        copier: VideoCopier,
        notifier: Notifier,
        accounts: JobAccounts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._s3 = s3
        self._copier = copier
        self._notifier = notifier
        self._accounts = accounts
        self._clock = clock

    def store_video(self, state: WorkflowState) -> Delivery:
        """Copies every output (quarantining flagged ones), writes job.json, notifies success.

        An output that can never be stored (refused, not an MP4, too big) is returned as a
        `failed` delivery for the failure step; only transient trouble raises.
        """
        started = self._clock()
        outputs: list[Json] = []
        for index, url in enumerate(state.poll.outputs, start=1):
            try:
                outputs.append(self._store_output(state, index, url))
            except PermanentError as exc:
                error = exc.detail()
                if outputs:
                    # Earlier outputs are verified and paid for: keep them, say where they are.
                    stored = ", ".join(o["uri"] for o in outputs)
                    error = ErrorDetail(
                        exc.code, f"output {index} failed ({exc.message}); already stored: {stored}"
                    )
                logger.warning("output not stored", extra={"code": exc.code, "output": index})
                kept = tuple(str(o["uri"]) for o in outputs)
                return Delivery(status=FAILED, outputs=kept, error=error)
        total = sum(int(o["size"]) for o in outputs)
        cost = job_cost_of(state, paid=True, polls=state.poll.polls or 1, stored_bytes=total)
        generation_s = float(state.poll.execution_time_ms or 0) / 1000
        if generation_s:
            metrics.add_metric(name="GenerationSeconds", unit="Seconds", value=generation_s)
        sidecar_key = self._write_sidecar(state, outputs, cost, generation_s, started)
        extra: Json = {"sidecar": {"bucket": self._settings.videos_bucket, "key": sidecar_key}}
        if any(o["nsfw"] for o in outputs):
            extra["has_nsfw_contents"] = True
        if state.job.restore and self._accounts is not None:
            # The job's first notification said `failed` and listed these outputs' source
            # URLs: a re-store that saved them replaces it with `completed`, once.
            extra["restored"] = self._accounts.reopen_failed(state.job.job_id)
        self._notifier.publish_outcome(
            workflow_notification(
                state, Outcome.COMPLETED.value, cost=cost, outputs=outputs, extra=extra
            )
        )
        logger.info("video stored", extra={"job_id": state.job.job_id, "outputs": len(outputs)})
        return Delivery(status=STORED, outputs=tuple(o["uri"] for o in outputs), bytes=total)

    def notify_failure(self, state: WorkflowState) -> Json:
        """The failure notification: the API failed the job, an output could not be stored, or
        a Task crashed (caught by the workflow)."""
        error = state.failure()
        refunded = state.poll.refunded
        cost = job_cost_of(
            state, paid=bool(state.prediction_id) and not refunded, polls=state.poll.polls
        )
        if refunded:
            cost["refunded"] = True
            cost["refund_reason"] = f"WaveSpeed refunds a {state.poll.last_status} generation"
        extra: Json = {}
        sources: list[Json] = []
        if state.poll.status == COMPLETED and state.poll.outputs and not state.job.restore:
            # The video exists at WaveSpeed: say where, and until when, so it can be re-stored.
            # A failed job lists each such output in `outputs` (entries with `source_url`, no
            # `key`: nothing was stored), and in `unstored_outputs` as earlier versions did.
            sources = source_outputs(state, self._clock())
            extra["unstored_outputs"] = sources
            listed = ", ".join(
                f"{o['source_url']} (until {o['source_expires_at']})" for o in sources
            )
            error = ErrorDetail(
                error.code,
                f"{error.message}; the video is still at WaveSpeed: {listed}; "
                f"`kling-pipeline restore {state.job.job_id}` stores it once the cause is fixed",
            )
        published = self._notifier.publish_outcome(
            workflow_notification(
                state, Outcome.FAILED.value, cost=cost, outputs=sources, error=error, extra=extra
            )
        )
        if published and refunded:
            self._refund_budget(state)
        return {"notified": published, "error": error.to_json()}

    def _refund_budget(self, state: WorkflowState) -> None:
        """Gives the refunded generation's reservation back to the day it was reserved on.

        Only after the notification went out: a retried failure step publishes nothing the
        second time, so the reservation is given back at most once.
        """
        if self._accounts is None or self._settings.daily_budget_usd <= 0:
            return
        day = (state.job.submitted_at or datetime.now(UTC).isoformat())[:10]
        price = float(job_cost(state.job.duration, paid=True)["wavespeed_usd"])
        self._accounts.refund_budget(day, price)
        logger.info("budget refunded", extra={"job_id": state.job.job_id, "usd": price})

    def _store_output(self, state: WorkflowState, index: int, url: str) -> Json:
        settings = self._settings
        job_id = state.job.job_id
        flags = state.poll.has_nsfw_contents
        nsfw = index <= len(flags) and flags[index - 1]
        prefix = settings.quarantine_prefix if nsfw else settings.videos_prefix
        key = f"{prefix}{job_id}/output-{index}.mp4"
        tagging = f"job_id={quote(job_id)}&prediction_id={quote(state.prediction_id)}"
        if nsfw:
            tagging += "&nsfw=true"
        stored: StoredObject = self._copier.copy(url, settings.videos_bucket, key, tagging=tagging)
        metrics.add_metric(name="BytesCopied", unit="Bytes", value=stored.size)
        output: Json = {
            "bucket": settings.videos_bucket,
            "key": key,
            "uri": f"s3://{settings.videos_bucket}/{key}",
            "size": stored.size,
            "sha256": stored.sha256,
            "content_type": "video/mp4",
            "nsfw": nsfw,
        }
        if not nsfw:
            output["url"] = self._s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": settings.videos_bucket, "Key": key},
                ExpiresIn=settings.presign_expiry_s,
            )
            output["url_expires_in_s"] = settings.presign_expiry_s
        return output

    def _write_sidecar(
        self,
        state: WorkflowState,
        outputs: list[Json],
        cost: Json,
        generation_s: float,
        started: float,
    ) -> str:
        job = state.job
        sidecar = {
            "job_id": job.job_id,
            "request_id": state.prediction_id,
            "input": job.input,
            "prompt_enhancement": job.prompt_enhancement,
            "source": job.source,
            "metadata": job.metadata,
            "timings": {
                "submitted_at": job.submitted_at,
                "stored_at": datetime.now(UTC).isoformat(),
                "generation_s": generation_s,
                "copy_s": round(self._clock() - started, 3),
                "polls": state.poll.polls,
            },
            "outputs": [{k: v for k, v in o.items() if k != "url"} for o in outputs],
            "cost": cost,
        }
        key = f"{self._settings.videos_prefix}{job.job_id}/job.json"
        self._s3.put_object(
            Bucket=self._settings.videos_bucket,
            Key=key,
            Body=json.dumps(sidecar, indent=2).encode(),
            ContentType="application/json",
        )
        return key
