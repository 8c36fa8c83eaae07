"""The simulator's settings, the models it serves and the prompt markers that inject faults."""

from __future__ import annotations

from dataclasses import dataclass

from ..mp4 import VideoBlob

MODEL = "kwaivgi/kling-v2.0-t2v-master"
OPTIMIZER_MODEL = "wavespeed-ai/prompt-optimizer"
MODEL_PATH = f"/api/v3/{MODEL}"
OPTIMIZER_PATH = f"/api/v3/{OPTIMIZER_MODEL}"

ASPECT_RATIOS = ("16:9", "9:16", "1:1")
DURATIONS = (5, 10)

MARKER_FAIL = "[sim:fail]"
MARKER_CANCEL = "[sim:cancel]"
MARKER_TIMEOUT = "[sim:timeout]"
MARKER_NSFW = "[sim:nsfw]"
MARKER_TWO_OUTPUTS = "[sim:two-outputs]"
MARKER_CUT_ONCE = "[sim:cut-once]"
MARKER_TRUNCATE = "[sim:truncate]"
MARKER_NOT_MP4 = "[sim:not-mp4]"
MARKER_429_ONCE = "[sim:429-once]"
MARKER_CODE_1001 = "[sim:code-1001]"
MARKER_500_SUBMIT = "[sim:500-submit]"
MARKER_SLOW_SUBMIT = "[sim:slow-submit]"
MARKER_DROP_SUBMIT = "[sim:drop-submit]"
MARKER_OPTIMIZER_FAIL = "[sim:optimizer-fail]"
MARKER_POLL_500_ONCE = "[sim:poll-500-once]"
MARKER_MODERATION = "[sim:moderation]"
#: `[sim:fail-<code>]` ends the task `failed` with that WaveSpeed error code (see FAILURE_CODES).
MARKER_FAIL_CODE = "[sim:fail-<code>]"
# Webhook faults of one task (only when its submit asked for a webhook).
MARKER_WEBHOOK_LOST = "[sim:webhook-lost]"
MARKER_WEBHOOK_DUPLICATE = "[sim:webhook-duplicate]"
#: `[sim:webhook-delay]` waits `webhook_delay_seconds`; `[sim:webhook-delay-<s>]` waits s
#: seconds (both scaled by `time_scale`).
MARKER_WEBHOOK_DELAY = "[sim:webhook-delay]"
MARKER_WEBHOOK_FORGED = "[sim:webhook-forged]"
MARKER_WEBHOOK_REPLAYED = "[sim:webhook-replayed]"
MARKER_WEBHOOK_OUT_OF_ORDER = "[sim:webhook-out-of-order]"
MARKERS = (
    MARKER_FAIL, MARKER_CANCEL, MARKER_TIMEOUT, MARKER_NSFW, MARKER_TWO_OUTPUTS,
    MARKER_CUT_ONCE, MARKER_TRUNCATE, MARKER_NOT_MP4, MARKER_429_ONCE, MARKER_CODE_1001,
    MARKER_500_SUBMIT, MARKER_SLOW_SUBMIT, MARKER_DROP_SUBMIT, MARKER_OPTIMIZER_FAIL,
    MARKER_POLL_500_ONCE, MARKER_MODERATION, MARKER_FAIL_CODE,
    MARKER_WEBHOOK_LOST, MARKER_WEBHOOK_DUPLICATE, MARKER_WEBHOOK_DELAY, MARKER_WEBHOOK_FORGED,
    MARKER_WEBHOOK_REPLAYED, MARKER_WEBHOOK_OUT_OF_ORDER,
)  # fmt: skip

#: WaveSpeed's task error codes (`data.code` of a failed prediction) and their documented text.
FAILURE_CODES = {
    1200: "The content contains sensitive information.",
    1400: "A required parameter is missing.",
    1401: "The parameter value is invalid.",
    1402: "Unable to access the provided media URL.",
    1403: "The task could not be completed.",
    1405: "The task execution failed.",
    5000: "An internal error occurred.",
    5003: "The service is temporarily unavailable.",
    5004: "The request timed out.",
}
MODERATION_CODE = 1200
SECONDS_PER_MINUTE = 60.0
#: What WaveSpeed charges per video of each duration, and per prompt optimisation.
PRICE_USD = {5: 1.30, 10: 2.60}
OPTIMIZER_PRICE_USD = 0.001


@dataclass(frozen=True)
class Tier:
    """An account level's two caps: tasks processing at once, and videos started per minute."""

    max_concurrency: int
    videos_per_minute: int


#: WaveSpeed's account levels (docs: "Account Levels & Rate Limits").
TIERS = {
    "bronze": Tier(max_concurrency=2, videos_per_minute=2),
    "silver": Tier(max_concurrency=300, videos_per_minute=500),
    "gold": Tier(max_concurrency=3000, videos_per_minute=3000),
    "ultra": Tier(max_concurrency=10000, videos_per_minute=5000),
}

OUTAGE_TARGETS = ("submit", "result", "both")
#: "http": HTTP 503 with a 503 envelope; "code": HTTP 200 whose envelope carries code 5003.
OUTAGE_FORMS = ("http", "code")
OUTPUT_STYLES = ("predictions", "output")
#: "prediction": the bare prediction object, as every WaveSpeed webhook page shows it;
#: "envelope": wrapped in {code, message, data} like the API's answers, for robustness tests.
WEBHOOK_BODIES = ("prediction", "envelope")


@dataclass(frozen=True)
class Outage:
    """A window in which the API answers 5xx: `start_seconds` after start(), for `seconds`
    (both in the service's time, so multiplied by the config's `time_scale`)."""

    start_seconds: float
    seconds: float
    on: str = "both"
    form: str = "http"

    def validate(self) -> None:
        if self.start_seconds < 0 or self.seconds <= 0:
            raise ValueError("an outage needs start_seconds >= 0 and seconds > 0")
        if self.on not in OUTAGE_TARGETS:
            raise ValueError(f"outage target must be one of {', '.join(OUTAGE_TARGETS)}")
        if self.form not in OUTAGE_FORMS:
            raise ValueError(f"outage form must be one of {', '.join(OUTAGE_FORMS)}")


#: Terminal states a seeded prediction may have.
SEEDABLE_STATUSES = ("completed", "failed")

COUNTERS = (
    "submit_requests",
    "tasks_created",
    "optimizer_requests",
    "result_requests",
    "downloads_started",
    "downloads_completed",
    "unauthorized",
    # Webhooks: HTTP requests made (retries included), and how each delivery ended.
    "webhook_requests",
    "webhooks_acknowledged",
    "webhooks_refused",
    "webhooks_abandoned",
    "webhooks_lost",
)

_RATES = (
    "submit_429_rate",
    "poll_5xx_rate",
    "fail_rate",
    "cancel_rate",
    "cut_once_rate",
    "truncate_rate",
    "moderation_rate",
    "webhook_lost_rate",
    "webhook_duplicate_rate",
    "webhook_delay_rate",
    "webhook_forged_rate",
    "webhook_replayed_rate",
    "webhook_out_of_order_rate",
)
_DURATIONS = (
    "generation_seconds",
    "processing_after_seconds",
    "submit_latency_seconds",
    "poll_latency_seconds",
    "slow_submit_seconds",
    "webhook_delay_seconds",
    "webhook_backoff_seconds",
)


@dataclass
class SimulatorConfig:
    """Behaviour of a simulator instance; every fault is off by default."""

    api_key: str = "sim-test-key"
    #: (prediction id, terminal status) pairs that exist from the start, ended, unpaid: what
    #: saved events (`events/poll.json`, `events/finalize-*.json`) name.
    seeded_predictions: tuple[tuple[str, str], ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    # Output URLs normally echo the request's Host header; set this to force another base.
    public_base_url: str | None = None
    generation_seconds: float = 1.0
    processing_after_seconds: float = 0.2
    output_size: int | None = None
    submit_latency_seconds: float = 0.0
    poll_latency_seconds: float = 0.0
    slow_submit_seconds: float = 30.0
    seed: int = 0
    submit_429_rate: float = 0.0
    poll_5xx_rate: float = 0.0
    fail_rate: float = 0.0
    cancel_rate: float = 0.0
    cut_once_rate: float = 0.0
    truncate_rate: float = 0.0
    moderation_rate: float = 0.0
    # Codes a random `fail_rate` failure carries, one picked per task.
    fail_codes: tuple[int, ...] = (1405,)
    # Account caps: a tier preset, and/or explicit numbers (which win). None: unlimited.
    tier: str | None = None
    max_concurrency: int | None = None
    videos_per_minute: int | None = None
    # Service clock factor: 0.05 makes a rate "minute" (and outage seconds) last 3 s.
    time_scale: float = 1.0
    outages: tuple[Outage, ...] = ()
    # Where output URLs point: None echoes the API's own address (so downloads work locally);
    # a bare host name means https://<host>, or give a whole base URL.
    output_host: str | None = None
    output_style: str = "predictions"
    balance_usd: float = 1_000_000.0
    # False: a key never activated by a top-up, answered 401 on every call.
    activated: bool = True
    webhook_secret: str = "whsec_c2ltdWxhdG9yLXdlYmhvb2stc2VjcmV0"
    # Webhook faults, dealt once per task that asked for a webhook (see MARKER_WEBHOOK_*).
    webhook_lost_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_delay_rate: float = 0.0
    webhook_forged_rate: float = 0.0
    webhook_replayed_rate: float = 0.0
    webhook_out_of_order_rate: float = 0.0
    # How late a delayed webhook comes, in the service's time (multiplied by `time_scale`).
    webhook_delay_seconds: float = 30.0
    webhook_body: str = "prediction"
    # WaveSpeed documents no retry policy; these are the simulator's choice: each attempt
    # waits `webhook_timeout_seconds` for an answer; a connection error, timeout, 429 or 5xx
    # is retried up to `webhook_attempts` in all, the k-th retry after
    # `webhook_backoff_seconds * 4**(k-1)` (scaled), so 1 s, 4 s, 16 s by default.
    webhook_timeout_seconds: float = 5.0
    webhook_attempts: int = 4
    webhook_backoff_seconds: float = 1.0
    verbose: bool = False

    def limits(self) -> Tier | None:
        """The account's caps; None when neither a tier nor explicit numbers are set."""
        preset = TIERS[self.tier] if self.tier is not None else None
        if preset is None and self.max_concurrency is None and self.videos_per_minute is None:
            return None
        unlimited = 10**9
        return Tier(
            max_concurrency=self.max_concurrency
            or (preset.max_concurrency if preset else unlimited),
            videos_per_minute=self.videos_per_minute
            or (preset.videos_per_minute if preset else unlimited),
        )

    def validate(self) -> None:
        """Raise ValueError for settings the simulator cannot honour."""
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in _DURATIONS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.output_size is not None and self.output_size < VideoBlob.min_size():
            raise ValueError(f"output_size must be at least {VideoBlob.min_size()} bytes")
        self._validate_account()
        for prediction_id, status in self.seeded_predictions:
            if not prediction_id or status not in SEEDABLE_STATUSES:
                raise ValueError(
                    f"a seeded prediction needs an id and one of {', '.join(SEEDABLE_STATUSES)},"
                    f" got {prediction_id!r}:{status!r}"
                )

    def _validate_account(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.videos_per_minute is not None and self.videos_per_minute < 1:
            raise ValueError("videos_per_minute must be at least 1")
        if self.tier is not None and self.tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if self.fail_rate + self.cancel_rate + self.moderation_rate > 1.0:
            raise ValueError("fail_rate + cancel_rate + moderation_rate must not exceed 1")
        if not self.fail_codes or any(code not in FAILURE_CODES for code in self.fail_codes):
            raise ValueError(f"fail_codes must be among {sorted(FAILURE_CODES)}")
        if self.output_style not in OUTPUT_STYLES:
            raise ValueError(f"output_style must be one of {', '.join(OUTPUT_STYLES)}")
        if self.balance_usd < 0:
            raise ValueError("balance_usd must not be negative")
        self._validate_webhooks()
        for outage in self.outages:
            outage.validate()

    def _validate_webhooks(self) -> None:
        if not self.webhook_secret.startswith("whsec_"):
            raise ValueError("webhook_secret must start with whsec_")
        if self.webhook_secret == "whsec_":
            raise ValueError("webhook_secret needs a key after whsec_")
        if self.webhook_body not in WEBHOOK_BODIES:
            raise ValueError(f"webhook_body must be one of {', '.join(WEBHOOK_BODIES)}")
        if self.webhook_timeout_seconds <= 0:
            raise ValueError("webhook_timeout_seconds must be positive")
        if self.webhook_attempts < 1:
            raise ValueError("webhook_attempts must be at least 1")
