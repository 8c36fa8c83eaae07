"""The one place that reads the environment: a frozen settings object built once per container."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import urlsplit

from .errors import PermanentError

#: WaveSpeed serves outputs from its own hosts and these CloudFront distributions (named one by
#: one: anyone can get a *.cloudfront.net host).
DEFAULT_OUTPUT_HOSTS = (
    "*.wavespeed.ai",
    "d1q70pf5vjeyhc.cloudfront.net",
    "d2p7pge43lyniu.cloudfront.net",
    "d11ewybssaphwx.cloudfront.net",
    "d2h7xmz5gqybh9.cloudfront.net",
)


@dataclass(frozen=True)
class PollSchedule:
    """How Step Functions waits for a generation; travels in the execution state as data."""

    first_wait_s: int = 60
    interval_s: int = 15
    backoff: float = 1.0
    max_interval_s: int = 60
    deadline_s: int = 3600
    #: How long a task may wait in WaveSpeed's queue (`created`) before its generation starts.
    queued_deadline_s: int = 6 * 3600
    #: Shortest wait between reads while the task is still queued: a queue can last hours, and
    #: every read costs history events (Step Functions keeps at most 25,000 per execution).
    queued_interval_s: int = 120
    #: Floor for every wait. Production keeps 5 s; only local runs may lower it.
    min_interval_s: int = 5
    #: Longest wait for a webhook before reading the status anyway; 0: no webhooks, poll.
    webhook_wait_s: int = 0

    def clamp(self) -> PollSchedule:
        """Applies the floor so no configuration polls more often than `min_interval_s`."""
        floor = self.min_interval_s
        return PollSchedule(
            first_wait_s=max(self.first_wait_s, floor),
            interval_s=max(self.interval_s, floor),
            backoff=max(self.backoff, 1.0),
            max_interval_s=max(self.max_interval_s, self.interval_s, floor),
            deadline_s=max(self.deadline_s, floor),
            queued_deadline_s=max(self.queued_deadline_s, floor),
            queued_interval_s=max(self.queued_interval_s, floor),
            min_interval_s=floor,
            webhook_wait_s=max(self.webhook_wait_s, 0),
        )


@dataclass(frozen=True)
class Settings:
    """Everything configurable, named after what it controls."""

    jobs_table: str = ""
    videos_bucket: str = ""
    topic_arn: str = ""
    state_machine_arn: str = ""
    job_queue_url: str = ""
    dead_letter_queue_url: str = ""
    api_key_secret: str = ""
    api_base: str = "https://api.wavespeed.ai"
    #: Local runs only: an API key given directly instead of through Secrets Manager (a
    #: stand-in's key, e.g. the simulator's); never used by a deployed function or for WaveSpeed.
    api_key_override: str = ""
    #: Where WaveSpeed sends webhooks (the webhook function's URL); empty: webhooks are off.
    webhook_url: str = ""
    allowed_output_hosts: tuple[str, ...] = DEFAULT_OUTPUT_HOSTS
    #: Local runs only: `host:port` pairs downloadable over plain http and private addresses.
    local_output_hosts: tuple[str, ...] = ()
    max_receive_count: int = 5
    #: First redelivery delay after a transient submit failure; doubles per receive.
    retry_base_s: float = 30.0
    submit_concurrency: int = 3
    #: The WaveSpeed account's videos started per minute (its tier); 0: no pacing.
    videos_per_minute: int = 0
    #: The rate window WaveSpeed counts starts in (shorter only against a time-scaled simulator).
    rate_window_s: float = 60.0
    #: Slack per rate window for late starts and uneven POST latencies (see submit.pacing).
    rate_margin_s: float = 2.0
    #: The longest a submit function sleeps for its turn before re-queueing the job instead.
    pace_max_wait_s: float = 3.0
    submit_lease_s: int = 300
    submit_timeout_s: float = 30.0
    #: Waits before each look at the prediction history after an ambiguous submit.
    reconcile_waits_s: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0)
    http_timeout_s: float = 10.0
    daily_budget_usd: float = 0.0
    #: Only prompt files in this bucket, under this prefix, are read (an S3-event-shaped
    #: message naming anything else is refused). Empty bucket: not checked (tests).
    prompts_bucket: str = ""
    prompts_prefix: str = "prompts/"
    max_prompt_file_bytes: int = 1024 * 1024
    max_jobs_per_file: int = 1000
    max_output_bytes: int = 2 * 1024**3
    copy_part_bytes: int = 8 * 1024 * 1024
    copy_concurrency: int = 4
    copy_attempts: int = 3
    #: One output's whole download, resumes included: two thirds of the finalize function's
    #: 900 s timeout, so a stalling server ends in a retryable error, never in a killed Lambda.
    download_deadline_s: float = 600.0
    presign_expiry_s: int = 12 * 3600
    videos_prefix: str = "videos/"
    quarantine_prefix: str = "quarantine/"
    record_ttl_days: int = 90
    #: X-Ray tracing through Powertools Tracer (only inside Lambda, where a daemon listens).
    tracing_enabled: bool = False
    poll: PollSchedule = field(default_factory=PollSchedule)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise PermanentError(f"setting {name} must be a number, got {raw!r}") from None


def deployed(env: Mapping[str, str]) -> bool:
    """True inside a Lambda function AWS runs; False in `sam local invoke` (which sets
    AWS_SAM_LOCAL=true), the local runner and tests."""
    return bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and env.get("AWS_SAM_LOCAL") != "true"


def _is_wavespeed(api_base: str) -> bool:
    host = urlsplit(api_base).hostname or ""
    return host == "wavespeed.ai" or host.endswith(".wavespeed.ai")


def _local_only(env: Mapping[str, str], name: str) -> str:
    """A local-run setting: the template declares it (empty) so `sam local invoke --env-vars`
    can set it, and a deployed function ignores it whatever value it is given, so production
    never downloads over plain http nor authenticates with anything but its secret."""
    return "" if deployed(env) else env.get(name, "")


def settings_from(env: Mapping[str, str]) -> Settings:
    """Builds settings from an environment mapping; unknown values fall back to defaults."""
    base = Settings()
    schedule = PollSchedule(
        first_wait_s=int(_number(env, "POLL_FIRST_WAIT_S", base.poll.first_wait_s)),
        interval_s=int(_number(env, "POLL_INTERVAL_S", base.poll.interval_s)),
        backoff=_number(env, "POLL_BACKOFF", base.poll.backoff),
        max_interval_s=int(_number(env, "POLL_MAX_INTERVAL_S", base.poll.max_interval_s)),
        deadline_s=int(_number(env, "POLL_DEADLINE_S", base.poll.deadline_s)),
        queued_deadline_s=int(_number(env, "POLL_QUEUED_DEADLINE_S", base.poll.queued_deadline_s)),
        queued_interval_s=int(_number(env, "POLL_QUEUED_INTERVAL_S", base.poll.queued_interval_s)),
        min_interval_s=int(_number(env, "POLL_MIN_INTERVAL_S", base.poll.min_interval_s)),
        webhook_wait_s=int(_number(env, "WEBHOOK_FALLBACK_S", 0)) if env.get("WEBHOOK_URL") else 0,
    ).clamp()
    hosts = _split(env.get("ALLOWED_OUTPUT_HOSTS", "")) or base.allowed_output_hosts
    api_base = env.get("WAVESPEED_API_BASE", "") or base.api_base
    # A stand-in's key goes to stand-ins only: switching the base to WaveSpeed is the one
    # change that makes a local invoke use (and pay with) the real key from the secret.
    key_override = "" if _is_wavespeed(api_base) else _local_only(env, "WAVESPEED_API_KEY_OVERRIDE")
    return Settings(
        jobs_table=env.get("JOBS_TABLE", ""),
        videos_bucket=env.get("VIDEOS_BUCKET", ""),
        topic_arn=env.get("NOTIFICATION_TOPIC_ARN", ""),
        state_machine_arn=env.get("STATE_MACHINE_ARN", ""),
        job_queue_url=env.get("JOB_QUEUE_URL", ""),
        dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL", ""),
        api_key_secret=env.get("API_KEY_SECRET", ""),
        prompts_bucket=env.get("PROMPTS_BUCKET", ""),
        api_base=api_base,
        api_key_override=key_override,
        webhook_url=env.get("WEBHOOK_URL", ""),
        allowed_output_hosts=hosts,
        local_output_hosts=_split(_local_only(env, "LOCAL_OUTPUT_HOSTS")),
        max_receive_count=int(_number(env, "MAX_RECEIVE_COUNT", base.max_receive_count)),
        retry_base_s=_number(env, "RETRY_BASE_S", base.retry_base_s),
        submit_concurrency=max(1, int(_number(env, "SUBMIT_CONCURRENCY", base.submit_concurrency))),
        submit_lease_s=int(_number(env, "SUBMIT_LEASE_S", base.submit_lease_s)),
        videos_per_minute=max(0, int(_number(env, "VIDEOS_PER_MINUTE", 0))),
        rate_window_s=max(0.001, _number(env, "RATE_WINDOW_S", base.rate_window_s)),
        rate_margin_s=max(0.0, _number(env, "RATE_MARGIN_S", base.rate_margin_s)),
        pace_max_wait_s=max(0.0, _number(env, "PACE_MAX_WAIT_S", base.pace_max_wait_s)),
        submit_timeout_s=_number(env, "SUBMIT_TIMEOUT_S", base.submit_timeout_s),
        reconcile_waits_s=tuple(float(w) for w in _split(env.get("RECONCILE_WAITS_S", "")))
        or base.reconcile_waits_s,
        http_timeout_s=_number(env, "HTTP_TIMEOUT_S", base.http_timeout_s),
        daily_budget_usd=_number(env, "DAILY_BUDGET_USD", base.daily_budget_usd),
        max_prompt_file_bytes=int(
            _number(env, "MAX_PROMPT_FILE_BYTES", base.max_prompt_file_bytes)
        ),
        max_jobs_per_file=int(_number(env, "MAX_JOBS_PER_FILE", base.max_jobs_per_file)),
        max_output_bytes=int(_number(env, "MAX_OUTPUT_BYTES", base.max_output_bytes)),
        copy_part_bytes=max(
            5 * 1024 * 1024, int(_number(env, "COPY_PART_BYTES", base.copy_part_bytes))
        ),
        copy_concurrency=max(1, int(_number(env, "COPY_CONCURRENCY", base.copy_concurrency))),
        copy_attempts=max(1, int(_number(env, "COPY_ATTEMPTS", base.copy_attempts))),
        download_deadline_s=_number(env, "DOWNLOAD_DEADLINE_S", base.download_deadline_s),
        presign_expiry_s=int(_number(env, "PRESIGN_EXPIRY_S", base.presign_expiry_s)),
        poll=schedule,
        tracing_enabled=env.get("TRACING_ENABLED", "").lower() == "true" and deployed(env),
    )


@cache
def load_settings() -> Settings:
    """Settings of this container (the local runner clears the cache between runs)."""
    return settings_from(os.environ)
