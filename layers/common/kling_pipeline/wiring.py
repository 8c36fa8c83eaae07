"""Builds each function's domain service once per container from settings and shared clients."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import clients
from .errors import TransientError
from .job.ledger import JobLedger
from .notify import Notifier
from .settings import load_settings

if TYPE_CHECKING:
    from .finalize.store import Finalizer
    from .submit.ports import GenerationApi
    from .submit.service import SubmitService
    from .webhook.receive import WebhookReceiver
    from .webhook.secret import WebhookSecret
    from .webhook.store import WebhookStore
    from .webhook.wake import TaskWaker

# Each function imports only its own service's modules (cold start): submit never loads the
# download code, finalize never loads the submission code.

T = TypeVar("T")


class _BuiltOnFirstUse:
    """Stands in for a port until a record first calls it, then for the one it builds."""

    # One lock for every port: records run in threads, and boto3 clients must not be created
    # from one session by two threads at once.
    _lock = threading.Lock()

    def __init__(self, build: Callable[[], object]) -> None:
        self._build = build
        self._built: object | None = None

    def __getattr__(self, name: str) -> Any:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._built_now()
        return getattr(self._built, name)

    def _built_now(self) -> object:
        # A failed build fails the call as the port's own transient failures do, and the
        # next use builds again. Callers handle only those: a refusal whose dead-letter park
        # raised anything else kept its park claimed, and the redelivery then parked nothing.
        try:
            return self._build()
        except Exception as exc:
            raise TransientError(
                f"could not set up a client ({type(exc).__name__}: {exc})", code="client_setup"
            ) from exc


def on_first_use(build: Callable[[], T]) -> T:
    """The port `build()` makes, made when a record first uses it: a port only some records
    need (the prompts bucket, the notification topic, the queues) costs a typical batch
    nothing. Its boto3 client is most of that cost: ~10 ms each, S3's ~40 ms, at cold start."""
    return cast(T, _BuiltOnFirstUse(build))


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
    from .submit.reconcile import Reconciler, TablePredictionOwners
    from .submit.refusal import Refuser
    from .submit.service import SubmitService
    from .submit.signing import AttributeSigner
    from .wavespeed_history import PredictionHistory
    from .webhook.submitting import WebhookSubmits, webhook_plan

    settings = webhook_plan(load_settings(), webhook_secret())
    signer = AttributeSigner(lambda: clients.api_key(settings))
    api: GenerationApi = clients.wavespeed()
    if settings.webhook_url:
        api = WebhookSubmits(clients.wavespeed(), settings.webhook_url, webhook_store())
    # Only refusals, retries and pacing waits use the queues, only prompt files the bucket.
    queue = on_first_use(
        lambda: SqsQueue(
            clients.sqs(),
            job_queue_url=settings.job_queue_url,
            dead_letter_queue_url=settings.dead_letter_queue_url,
        )
    )
    admission = Admission(
        settings,
        ledger=ledger(),
        api=api,
        workflows=StepFunctionsWorkflows(clients.stepfunctions(), settings.state_machine_arn),
        reconciler=Reconciler(
            PredictionHistory(clients.wavespeed()),
            TablePredictionOwners(clients.dynamodb(), settings.jobs_table),
            waits_s=settings.reconcile_waits_s,
        ),
        pacer=start_pacer(settings, clients.dynamodb()),
    )
    return SubmitService(
        settings,
        admission=admission,
        refuser=Refuser(
            ledger=ledger(), notifier=on_first_use(notifier), queue=queue, signer=signer
        ),
        ledger=ledger(),
        queue=queue,
        prompt_files=on_first_use(
            lambda: S3PromptFiles(clients.s3(), settings.max_prompt_file_bytes)
        ),
        signer=signer,
        resend=on_first_use(lambda: SqsResend(clients.sqs(), settings.job_queue_url)),
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
    return Finalizer(
        settings, s3=clients.s3(), copier=copier, notifier=notifier(), accounts=ledger()
    )


@cache
def webhook_secret() -> WebhookSecret:
    from .webhook.secret import WebhookSecret

    settings = load_settings()
    return WebhookSecret(
        settings.api_base,
        lambda: clients.api_key(settings),
        http=clients.http(),
        timeout_s=settings.http_timeout_s,
    )


@cache
def webhook_store() -> WebhookStore:
    from .webhook.store import WebhookStore

    return WebhookStore(clients.dynamodb(), load_settings().jobs_table)


@cache
def task_waker() -> TaskWaker:
    from .webhook.wake import TaskWaker

    return TaskWaker(clients.stepfunctions())


@cache
def webhook_receiver() -> WebhookReceiver:
    from .webhook.receive import WebhookReceiver

    return WebhookReceiver(secret=webhook_secret(), store=webhook_store(), waker=task_waker())


def reset() -> None:
    """Drops every cached service, client and the settings."""
    for factory in (
        ledger,
        notifier,
        submit_service,
        finalizer,
        webhook_secret,
        webhook_store,
        task_waker,
        webhook_receiver,
    ):
        factory.cache_clear()
    clients.reset()
