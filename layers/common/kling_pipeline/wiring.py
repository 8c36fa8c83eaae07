"""Builds each function's domain service once per container from settings and shared clients."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from . import clients
from .ledger import JobLedger
from .notify import Notifier
from .settings import load_settings

if TYPE_CHECKING:
    from .delivery import DeliveryService
    from .submission import SubmissionService

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
def submission_service() -> SubmissionService:
    from .submission import SubmissionService

    settings = load_settings()
    return SubmissionService(
        settings,
        ledger=ledger(),
        wavespeed=clients.wavespeed(),
        notifier=notifier(),
        sqs=clients.sqs(),
        s3=clients.s3(),
        sfn=clients.stepfunctions(),
        retry_base_s=settings.retry_base_s,
    )


@cache
def delivery_service() -> DeliveryService:
    from .delivery import DeliveryService
    from .finalize.policy import DownloadPolicy
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
    return DeliveryService(settings, s3=clients.s3(), copier=copier, notifier=notifier())


def reset() -> None:
    """Drops every cached service, client and the settings."""
    for factory in (ledger, notifier, submission_service, delivery_service):
        factory.cache_clear()
    clients.reset()
