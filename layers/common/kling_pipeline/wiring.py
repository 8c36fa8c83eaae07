"""Builds each function's domain service once per container from settings and shared clients."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from . import clients
from .job.ledger import JobLedger
from .notify import Notifier
from .settings import load_settings

if TYPE_CHECKING:
    from .finalize.store import Finalizer
    from .submit.service import SubmitService

# Each function imports only its own service's modules (cold start): submit never loads the
# download code, finalize never loads the submission code.


@cache
def ledger() -> JobLedger:
    settings = load_settings()
    return JobLedger(clients.dynamodb(), settings.jobs_table, ttl_days=settings.record_ttl_days)


@cache
def notifier() -> Notifier:
    return Notifier(clients.sns(), load_settings().topic_arn, ledger())


@cache
def submit_service() -> SubmitService:
    from .submit.admission import Admission
    from .submit.aws import S3PromptFiles, SqsQueue, StepFunctionsWorkflows
    from .submit.pacing_table import SqsResend, start_pacer
    from .submit.refusal import Refuser
    from .submit.service import SubmitService

    settings = load_settings()
    queue = SqsQueue(
        clients.sqs(),
        job_queue_url=settings.job_queue_url,
        dead_letter_queue_url=settings.dead_letter_queue_url,
    )
    admission = Admission(
        settings,
        ledger=ledger(),
        api=clients.wavespeed(),
        workflows=StepFunctionsWorkflows(clients.stepfunctions(), settings.state_machine_arn),
        pacer=start_pacer(settings, clients.dynamodb()),
    )
    return SubmitService(
        settings,
        admission=admission,
        refuser=Refuser(ledger=ledger(), notifier=notifier(), queue=queue),
        ledger=ledger(),
        queue=queue,
        prompt_files=S3PromptFiles(clients.s3(), settings.max_prompt_file_bytes),
        resend=SqsResend(clients.sqs(), settings.job_queue_url),
    )


@cache
def finalizer() -> Finalizer:
    from .finalize.policy import DownloadPolicy
    from .finalize.store import Finalizer
    from .finalize.upload import VideoCopier

    settings = load_settings()
    policy = DownloadPolicy(
        allowed_hosts=settings.allowed_output_hosts,
        local_hosts=settings.local_output_hosts,
        max_bytes=settings.max_output_bytes,
        timeout_s=settings.http_timeout_s,
        deadline_s=settings.download_deadline_s,
    )
    copier = VideoCopier(
        clients.s3(),
        policy,
        part_bytes=settings.copy_part_bytes,
        concurrency=settings.copy_concurrency,
        attempts=settings.copy_attempts,
    )
    return Finalizer(settings, s3=clients.s3(), copier=copier, notifier=notifier())


def reset() -> None:
    """Drops every cached service, client and the settings."""
    for factory in (ledger, notifier, submit_service, finalizer):
        factory.cache_clear()
    clients.reset()
