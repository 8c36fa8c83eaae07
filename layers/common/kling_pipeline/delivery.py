"""Stores a finished job's videos with a sidecar, and sends its one terminal notification."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import PermanentError
from .finalize.upload import VideoCopier
from .models import Notification, price_usd
from .notify import Notifier
from .observability import logger, metrics
from .settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Json = dict[str, Any]
#: Pipeline errors render as "[code] message" so the code survives Lambda's error payload.
ERROR_TAG = re.compile(r"^\[([a-z0-9_]+)\] (.*)$", re.DOTALL)
# Rough AWS list prices (us-east-1) for the cost estimate in notifications.
SFN_TRANSITION_USD = 0.000025
LAMBDA_INVOKE_USD = 0.0000002 + 0.0000166667 * 0.5  # request + ~0.5 GB-s
S3_GB_MONTH_USD = 0.023


def estimate_aws_usd(polls: int, stored_bytes: int) -> float:
    """Transitions and invocations of this workflow plus one month of storage."""
    transitions = 6 + 3 * polls
    invocations = 3 + polls
    storage = stored_bytes / 1024**3 * S3_GB_MONTH_USD
    return round(transitions * SFN_TRANSITION_USD + invocations * LAMBDA_INVOKE_USD + storage, 6)


def _price(job: Json) -> float:
    return price_usd(int(job.get("input", {}).get("duration", 5)))


class DeliveryService:
    """The finalize step: copy outputs into the videos bucket, then publish the outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        s3: S3Client,
        copier: VideoCopier,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._s3 = s3
        self._copier = copier
        self._notifier = notifier
        self._clock = clock

    def store_video(self, state: Json) -> Json:
        """Copies every output (quarantining flagged ones), writes job.json, notifies success."""
        job: Json = state["job"]
        job_id = str(job["job_id"])
        poll: Json = state["poll"]
        prediction_id = str(state["prediction"]["id"])
        flags: list[bool] = list(poll.get("has_nsfw_contents") or [])
        bucket = self._settings.videos_bucket
        started = self._clock()
        outputs: list[Json] = []
        for index, url in enumerate(poll["outputs"], start=1):
            nsfw = index <= len(flags) and bool(flags[index - 1])
            prefix = self._settings.quarantine_prefix if nsfw else self._settings.videos_prefix
            key = f"{prefix}{job_id}/output-{index}.mp4"
            tagging = f"job_id={quote(job_id)}&prediction_id={quote(prediction_id)}"
            if nsfw:
                tagging += "&nsfw=true"
            try:
                stored = self._copier.copy(url, bucket, key, tagging=tagging)
            except PermanentError as exc:
                if not outputs:
                    raise
                # Earlier outputs are verified and paid for: keep them, and say where they are.
                kept = ", ".join(o["uri"] for o in outputs)
                raise PermanentError(
                    f"output {index} failed ({exc.message}); already stored: {kept}",
                    code=exc.code,
                ) from None
            metrics.add_metric(name="BytesCopied", unit="Bytes", value=stored.size)
            output: Json = {
                "bucket": bucket,
                "key": key,
                "uri": f"s3://{bucket}/{key}",
                "size": stored.size,
                "sha256": stored.sha256,
                "content_type": "video/mp4",
                "nsfw": nsfw,
            }
            if not nsfw:
                output["url"] = self._s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": bucket, "Key": key},
                    ExpiresIn=self._settings.presign_expiry_s,
                )
                output["url_expires_in_s"] = self._settings.presign_expiry_s
            outputs.append(output)
        total = sum(int(o["size"]) for o in outputs)
        cost = {
            "wavespeed_usd": _price(job),
            "aws_usd_estimate": estimate_aws_usd(int(poll.get("polls", 1)), total),
            "currency": "USD",
            "paid": True,
        }
        generation_s = float(poll.get("execution_time_ms") or 0) / 1000
        if generation_s:
            metrics.add_metric(name="GenerationSeconds", unit="Seconds", value=generation_s)
        sidecar = {
            "job_id": job_id,
            "request_id": prediction_id,
            "input": job.get("input"),
            "prompt_enhancement": job.get("prompt_enhancement"),
            "source": job.get("source"),
            "metadata": job.get("metadata"),
            "timings": {
                "submitted_at": job.get("submitted_at"),
                "stored_at": datetime.now(UTC).isoformat(),
                "generation_s": generation_s,
                "copy_s": round(self._clock() - started, 3),
                "polls": poll.get("polls"),
            },
            "outputs": [{k: v for k, v in o.items() if k != "url"} for o in outputs],
            "cost": cost,
        }
        sidecar_key = f"{self._settings.videos_prefix}{job_id}/job.json"
        self._s3.put_object(
            Bucket=bucket,
            Key=sidecar_key,
            Body=json.dumps(sidecar, indent=2).encode(),
            ContentType="application/json",
        )
        extra: Json = {"sidecar": {"bucket": bucket, "key": sidecar_key}}
        if any(o["nsfw"] for o in outputs):
            extra["has_nsfw_contents"] = True
        self._publish(state, "completed", outputs=outputs, error=None, cost=cost, extra=extra)
        logger.info("video stored", extra={"job_id": job_id, "outputs": len(outputs)})
        return {"outputs": [o["uri"] for o in outputs], "bytes": total}

    def notify_failure(self, state: Json) -> Json:
        """The failure notification, whether the API failed the job or a Task error was caught."""
        caught = state.get("error")
        poll: Json = state.get("poll") or {}
        if isinstance(caught, dict) and caught.get("Error"):
            error = self._caught_error(caught)
        else:
            error = poll.get("error") or {"code": "unknown", "message": "the job failed"}
        paid = bool(state.get("prediction", {}).get("id"))
        cost = {
            "wavespeed_usd": _price(state["job"]) if paid else 0.0,
            "aws_usd_estimate": estimate_aws_usd(int(poll.get("polls", 0)), 0),
            "currency": "USD",
            "paid": paid,
        }
        published = self._publish(state, "failed", outputs=[], error=error, cost=cost, extra={})
        return {"notified": published, "error": error}

    @staticmethod
    def _caught_error(caught: Json) -> Json:
        name = str(caught.get("Error"))
        cause = str(caught.get("Cause") or "")
        code, message = name, cause
        try:
            detail = json.loads(cause)
            message = str(detail.get("errorMessage") or cause)
        except (json.JSONDecodeError, AttributeError):
            pass
        tagged = ERROR_TAG.match(message)
        if tagged:
            code, message = tagged.group(1), tagged.group(2)
        if name == "States.Timeout":
            code = "task_timeout"
        return {"code": code, "message": message[:2000]}

    def _publish(
        self,
        state: Json,
        status: str,
        *,
        outputs: list[Json],
        error: Json | None,
        cost: Json,
        extra: Json,
    ) -> bool:
        job: Json = state["job"]
        enhancement = job.get("prompt_enhancement")
        if enhancement:
            extra = {**extra, "prompt_enhancement": enhancement}
        return self._notifier.publish_outcome(
            Notification(
                job_id=str(job["job_id"]),
                status=status,
                input=job.get("input") or {},
                source=job.get("source") or {},
                request_id=state.get("prediction", {}).get("id"),
                outputs=outputs,
                error=error,
                metadata=job.get("metadata") or {},
                cost=cost,
                extra=extra,
            )
        )
