"""How a local run is configured: template parameters (local shortcuts, then the user's
overrides) and the environment the functions read their settings from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cfn import TEMPLATE, Template, parse
from .parameters import validate_overrides

if TYPE_CHECKING:
    from .pipeline import LocalOptions

#: The template parameters a local run shortens, and the LocalOptions field each comes from.
#: Values below the template's own minimum are allowed here only: they are ours, not a user's.
SHORTCUT_PARAMETERS = {
    "PollFirstWaitSeconds": "poll_first_wait_s",
    "PollIntervalSeconds": "poll_interval_s",
    "PollMaxIntervalSeconds": "poll_interval_s",
    "PollDeadlineSeconds": "poll_deadline_s",
    "PollQueuedIntervalSeconds": "poll_interval_s",
    "WebhookFallbackSeconds": "webhook_fallback_s",
}


#: Naming either of these in --parameter-overrides paces the local run like a deployed stack.
PACING_PARAMETERS = {"WaveSpeedTier", "WaveSpeedVideosPerMinute"}


def local_template(options: LocalOptions) -> Template:
    """template.yaml with the local shortcuts, then `template_overrides` (tests' raw knob),
    then the user's `parameter_overrides`, which must pass the template's constraints."""
    declared: dict[str, Any] = parse(TEMPLATE.read_text()).get("Parameters", {})
    overrides = validate_overrides(declared, options.parameter_overrides)
    shortcuts = {
        name: str(getattr(options, option))
        for name, option in SHORTCUT_PARAMETERS.items()
        if name in declared
    }
    return Template.load(overrides={**shortcuts, **options.template_overrides, **overrides})


def paced(options: LocalOptions) -> bool:
    """Local runs are not paced to a WaveSpeed tier unless one is asked for: the template's
    default (Bronze, one start every 31 s) would make every multi-job run crawl."""
    chosen = {**options.template_overrides, **options.parameter_overrides}
    return bool(PACING_PARAMETERS & chosen.keys())


def function_environment(
    template: Template, options: LocalOptions, api_base: str, local_hosts: list[str]
) -> dict[str, str]:
    """Every function's template environment, then the local-only settings on top."""
    env: dict[str, str] = {}
    for logical_id in template.of_type("AWS::Serverless::Function"):
        env.update(template.function_environment(logical_id))
    env.update(
        {
            "WAVESPEED_API_BASE": api_base,
            "LOCAL_OUTPUT_HOSTS": ",".join(local_hosts),
            # Production never polls more often than every 5 s; the shortcuts above need less.
            "POLL_MIN_INTERVAL_S": "0",
            "RETRY_BASE_S": str(options.retry_base_s),
        }
    )
    if not paced(options):
        env["VIDEOS_PER_MINUTE"] = "0"  # the submit path's own "no rate cap": no schedule
    env.update(options.env)
    return env
