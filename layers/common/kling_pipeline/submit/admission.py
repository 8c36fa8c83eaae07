"""Admission: claim the job id -> reserve budget -> enhance -> POST once -> start the workflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..errors import BudgetExceeded, PermanentError, SubmitOutcomeUnknown, TransientError
from ..job.record import JobRecord, Stage
from ..job.request import Job
from ..job.workflow import JobSummary, WorkflowState
from ..observability import logger, metrics
from ..settings import Settings
from ..types import Json
from .pacing import UNPACED, Pacer
from .ports import GenerationApi, Ledger, Workflows

SUBMIT_HINT = (
    "Check your WaveSpeed dashboard for a Kling task created around {at} with this prompt "
    "before resubmitting; resubmit with a new job_id only if none exists."
)


class Admission:
    """Pays for a job at most once per job id, and makes sure its workflow runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger,
        api: GenerationApi,
        workflows: Workflows,
        pacer: Pacer = UNPACED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._api = api
        self._workflows = workflows
        self._pacer = pacer
        self._clock = clock

    def admit(self, job: Job, source: Json) -> str | None:
        """Submits `job` unless its id was seen; returns the prediction id when it ran now.

        Raises PermanentError (with its code) when the job cannot run, TransientError when a
        later delivery may succeed.
        """
        self._api.check_credentials()
        existing = self._ledger.claim_submission(
            job.job_id, lease_s=self._settings.submit_lease_s, job=job.to_message(), source=source
        )
        if existing is not None:
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
            # The account's start rate is shared: the slot is taken right before the POST.
            turn = self._pacer.wait_turn(job.job_id)
        except Exception:  # a wait, or the schedule unreachable: nothing was sent, let go
            self._ledger.release(job.job_id)
            if cap > 0:
                self._ledger.refund_budget(day, price)
            raise
        sent_at = datetime.now(UTC).isoformat()
        try:
            prediction_id = self._api.submit_generation(job.api_payload(prompt))
        except SubmitOutcomeUnknown as exc:
            raise SubmitOutcomeUnknown(f"{exc.message}. {SUBMIT_HINT.format(at=sent_at)}") from None
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
        except (TransientError, PermanentError) as exc:
            logger.warning("prompt optimizer failed", extra={"job_id": job.job_id})
            return prompt, {
                "status": "failed",
                "error": exc.message,
                "note": "the job was submitted with the original prompt",
            }
        return enhanced, {"status": "applied", "enhanced_prompt": enhanced}
