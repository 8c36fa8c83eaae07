"""Admission: claim the job id -> reserve budget -> enhance -> POST once -> start the workflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..errors import BudgetExceeded, PermanentError, SubmitOutcomeUnknown, TransientError
from ..job.record import JobRecord, Stage, encode
from ..job.request import MAX_PROMPT_CHARS, Job, has_visible_text
from ..job.workflow import JobSummary, WorkflowState
from ..observability import logger, metrics
from ..settings import Settings
from ..types import Json
from .pacing import UNPACED, Pacer
from .ports import GenerationApi, Ledger, Workflows
from .reconcile import Reconciler

#: Time a submit needs beyond its read timeout: connect retries, 429 backoff, ledger and start.
SUBMIT_MARGIN_S = 30.0
NOT_STARTED = "not_started"

SUBMIT_HINT = (
    "Check your WaveSpeed dashboard for a Kling task created around {at} with this prompt "
    "before resubmitting; resubmit with a new job_id only if none exists."
)


class JobIdConflict(PermanentError):
    """The job id belongs to a different request: this message must not touch that job."""

    default_code = "job_id_conflict"


def no_deadline() -> float:
    """Time left when nothing bounds the call (tests, the local runner without a context)."""
    return float("inf")


class Admission:
    """Pays for a job at most once per job id, and makes sure its workflow runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger,
        api: GenerationApi,
        workflows: Workflows,
        reconciler: Reconciler | None = None,
        pacer: Pacer = UNPACED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._api = api
        self._workflows = workflows
        self._reconciler = reconciler
        self._pacer = pacer
        self._clock = clock

    def admit(
        self, job: Job, source: Json, *, time_left: Callable[[], float] = no_deadline
    ) -> str | None:
        """Submits `job` unless its id was seen; returns the prediction id when it ran now.

        Raises PermanentError (with its code) when the job cannot run, JobIdConflict when its
        id belongs to another request, TransientError when a later delivery may succeed.
        `time_left` (seconds) bounds the invocation: a paid POST that could not finish in it
        is never started; the message is left for SQS to deliver again.
        """
        self._api.check_credentials()
        self._ensure_time(job, time_left)
        existing = self._ledger.claim_submission(
            job.job_id,
            lease_s=self._settings.submit_lease_s,
            job=job.to_message(),
            source=source,
            fingerprint=job.fingerprint,
        )
        if existing is not None:
            self._check_same_request(job, existing)
            self._resume(existing)
            return None

        price = job.price_usd()
        day = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d")
        cap = self._settings.daily_budget_usd
        if cap > 0 and not self._ledger.reserve_budget(day, price, cap):
            self._ledger.release(job.job_id)
            raise BudgetExceeded(
                f"submitting this ${price:.2f} job would pass the daily budget of "
                f"${cap:.2f} for {day}; the message is parked in the dead-letter queue for redrive"
            )
        prompt, enhancement = self._enhanced_prompt(job)
        try:
            self._ensure_time(job, time_left, enhancing=False)
            # The account's start rate is shared: the slot is taken right before the POST
            # (a near turn is slept for; the time guard's margin covers that short sleep).
            turn = self._pacer.wait_turn(job.job_id)
        except Exception:  # out of time, a wait, or the schedule unreachable: nothing was sent
            self._ledger.release(job.job_id)
            if cap > 0:
                self._ledger.refund_budget(day, price)
            raise
        sent_at = datetime.now(UTC).isoformat()
        sent = self._clock()
        try:
            prediction_id = self._api.submit_generation(job.api_payload(prompt))
        except SubmitOutcomeUnknown as exc:
            # Never a second POST: the task is looked up in WaveSpeed's history instead.
            returned = self._clock()
            reconciler = self._reconciler
            found = reconciler.find(job.job_id, prompt, sent, returned) if reconciler else None
            if found is None or found.prediction_id is None:
                evidence = f" Reconciling: {found.evidence}." if found else ""
                raise SubmitOutcomeUnknown(
                    f"{exc.message}.{evidence} {SUBMIT_HINT.format(at=sent_at)}"
                ) from None
            prediction_id = found.prediction_id
        except (TransientError, PermanentError):
            # Provably not accepted (429, refused, rejected): nothing was paid.
            self._pacer.give_back(turn)
            self._ledger.release(job.job_id)
            if cap > 0:
                self._ledger.refund_budget(day, price)
            raise
        metrics.add_metric(name="JobsSubmitted", unit="Count", value=1)
        metrics.add_metric(name="DollarsCommitted", unit="Count", value=price)
        summary = JobSummary(
            job_id=job.job_id,
            input=job.input,
            source=source,
            metadata=job.metadata,
            prompt_enhancement=enhancement,
        )
        state = WorkflowState.start(summary, prediction_id, self._settings.poll, self._clock())
        self._ledger.record_prediction(job.job_id, prediction_id, state)
        logger.info("task submitted", extra={"job_id": job.job_id, "prediction_id": prediction_id})
        self._start(job.job_id, state)
        return prediction_id

    def _ensure_time(
        self, job: Job, time_left: Callable[[], float], *, enhancing: bool = True
    ) -> None:
        calls = 2 if enhancing and job.request.enhance_prompt else 1
        needed = calls * self._settings.submit_timeout_s + SUBMIT_MARGIN_S
        left = time_left()
        if left < needed:
            raise TransientError(
                f"not started: {left:.0f} s left in this invocation, a submit needs up to "
                f"{needed:.0f} s; the message is left for another delivery",
                code=NOT_STARTED,
            )

    @staticmethod
    def _check_same_request(job: Job, existing: JobRecord) -> None:
        if existing.fingerprint is not None:
            same = existing.fingerprint == job.fingerprint
        else:  # records written before fingerprints: compare the stored message
            same = not existing.job_input or encode(existing.job_input) == encode(job.to_message())
        if not same:
            raise JobIdConflict(
                f"job_id {job.job_id!r} already belongs to a different request "
                f"(status: {existing.status or 'in progress'}); this message was not run and "
                "that job was left unchanged. Send it again with a new job_id."
            )
        if existing.stage is None and not existing.notified:
            raise TransientError(
                "another delivery is settling this job right now", code="in_progress"
            )

    def _resume(self, existing: JobRecord) -> None:
        if existing.stage is Stage.SUBMITTING:
            if not existing.lease_expired:
                raise TransientError(
                    "another delivery is submitting this job right now", code="in_progress"
                )
            raise SubmitOutcomeUnknown(
                "an earlier attempt stopped while submitting this job, after the request may "
                "have reached WaveSpeed. " + SUBMIT_HINT.format(at=existing.created_at)
            )
        state = existing.workflow
        if existing.stage is Stage.SUBMITTED and state is not None:
            # Crashed after the paid POST but before the workflow started: start it now.
            self._start(existing.job_id, state)
            return
        metrics.add_metric(name="JobsDeduplicated", unit="Count", value=1)
        logger.info(
            "duplicate delivery ignored",
            extra={"job_id": existing.job_id, "status": existing.status},
        )

    def _start(self, job_id: str, state: WorkflowState) -> None:
        arn = self._workflows.start(job_id, state)
        # False: a twin delivery recorded the start first, which is the same execution.
        self._ledger.mark_started(job_id, arn)

    def _enhanced_prompt(self, job: Job) -> tuple[str, Json | None]:
        prompt = job.request.prompt
        if not job.request.enhance_prompt:
            return prompt, None
        try:
            enhanced = self._api.enhance_prompt(prompt)
            usable_enhancement(enhanced)
        except (TransientError, PermanentError) as exc:
            logger.warning("prompt optimizer failed", extra={"job_id": job.job_id})
            return prompt, {
                "status": "failed",
                "error": exc.message[:500],
                "note": "the job was submitted with the original prompt",
            }
        return enhanced, {"status": "applied", "enhanced_prompt": enhanced}


def usable_enhancement(enhanced: object) -> None:
    """The optimizer's answer must itself be a valid prompt, or the original one is used."""
    if not isinstance(enhanced, str):
        raise PermanentError(
            f"prompt optimizer answered a {type(enhanced).__name__}, not text", code="enhance"
        )
    if not has_visible_text(enhanced):
        raise PermanentError("prompt optimizer answered an empty prompt", code="enhance")
    if len(enhanced) > MAX_PROMPT_CHARS:
        raise PermanentError(
            f"prompt optimizer answered {len(enhanced)} characters, more than the "
            f"{MAX_PROMPT_CHARS} a prompt may have",
            code="enhance",
        )
