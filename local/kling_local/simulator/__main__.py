"""Command line: `python -m kling_local.simulator --port N` serves the simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .config import (
    OUTAGE_FORMS,
    OUTAGE_TARGETS,
    OUTPUT_STYLES,
    SEEDABLE_STATUSES,
    TIERS,
    WEBHOOK_BODIES,
    Outage,
    SimulatorConfig,
)
from .core import WaveSpeedSimulator


def _outage(text: str) -> Outage:
    """START:SECONDS[:ON[:FORM]], e.g. 30:1800:result:code."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError("expected START:SECONDS[:ON[:FORM]]")
    try:
        outage = Outage(float(parts[0]), float(parts[1]), *parts[2:])
        outage.validate()
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None
    return outage


def _seeded(text: str) -> tuple[str, str]:
    """ID[:STATUS], e.g. 0123abcd or 0123abcd:failed (default completed)."""
    prediction_id, _, status = text.partition(":")
    status = status or "completed"
    if not prediction_id or status not in SEEDABLE_STATUSES:
        raise argparse.ArgumentTypeError(
            f"expected ID[:STATUS], STATUS one of {', '.join(SEEDABLE_STATUSES)}"
        )
    return prediction_id, status


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kling_local.simulator",
        description="Run a local WaveSpeed API simulator until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=SimulatorConfig.api_key)
    parser.add_argument(
        "--generation-seconds", type=float, default=SimulatorConfig.generation_seconds
    )
    parser.add_argument(
        "--output-size",
        type=int,
        default=None,
        help="bytes of each output MP4 (default: the small sample video)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--submit-429-rate", type=float, default=0.0)
    parser.add_argument("--poll-5xx-rate", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--moderation-rate", type=float, default=0.0)
    parser.add_argument(
        "--tier", choices=sorted(TIERS), default=None, help="account level preset (default: none)"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="tasks processing at once (queues)"
    )
    parser.add_argument(
        "--videos-per-minute", type=int, default=None, help="video starts per minute (429)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="service clock factor: 0.05 makes a rate minute and outage seconds 20x shorter",
    )
    parser.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="START:SECONDS[:ON[:FORM]]",
        help=f"5xx window after start (ON: {'/'.join(OUTAGE_TARGETS)}, "
        f"FORM: {'/'.join(OUTAGE_FORMS)}); repeatable",
    )
    parser.add_argument("--balance", type=float, default=SimulatorConfig.balance_usd, help="USD")
    parser.add_argument(
        "--not-activated", action="store_true", help="answer 401 as for a key never topped up"
    )
    parser.add_argument(
        "--output-host", default=None, help="host name (or base URL) of output URLs"
    )
    parser.add_argument("--output-style", choices=OUTPUT_STYLES, default="predictions")
    parser.add_argument("--webhook-secret", default=SimulatorConfig.webhook_secret)
    _add_webhook_arguments(parser)
    parser.add_argument("--public-base-url", default=None)
    parser.add_argument(
        "--seed-prediction",
        type=_seeded,
        action="append",
        default=[],
        metavar="ID[:STATUS]",
        help="a prediction that exists from the start, already ended (completed with one "
        "output, or failed), unpaid: for saved events; repeatable",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


#: Webhook fault rates: flag suffix -> SimulatorConfig field.
_WEBHOOK_RATES = {
    "lost": "webhook_lost_rate",
    "duplicate": "webhook_duplicate_rate",
    "delay": "webhook_delay_rate",
    "forged": "webhook_forged_rate",
    "replayed": "webhook_replayed_rate",
    "out-of-order": "webhook_out_of_order_rate",
}


def _add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    for suffix in _WEBHOOK_RATES:
        parser.add_argument(
            f"--webhook-{suffix}-rate",
            type=float,
            default=0.0,
            help=f"share of tasks whose webhook is {suffix.replace('-', ' ')}",
        )
    parser.add_argument(
        "--webhook-delay-seconds",
        type=float,
        default=SimulatorConfig.webhook_delay_seconds,
        help="how late a delayed webhook comes (scaled by --time-scale)",
    )
    parser.add_argument(
        "--webhook-body",
        choices=WEBHOOK_BODIES,
        default=SimulatorConfig.webhook_body,
        help="the bare prediction (as documented) or wrapped in the API envelope",
    )
    parser.add_argument(
        "--webhook-attempts",
        type=int,
        default=SimulatorConfig.webhook_attempts,
        help="HTTP attempts per webhook before giving up (retries on no answer, 429, 5xx)",
    )
    parser.add_argument(
        "--webhook-timeout",
        type=float,
        default=SimulatorConfig.webhook_timeout_seconds,
        help="seconds to wait for the receiver's answer to one attempt",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        generation_seconds=args.generation_seconds,
        output_size=args.output_size,
        seed=args.seed,
        submit_429_rate=args.submit_429_rate,
        poll_5xx_rate=args.poll_5xx_rate,
        fail_rate=args.fail_rate,
        moderation_rate=args.moderation_rate,
        tier=args.tier,
        max_concurrency=args.max_concurrency,
        videos_per_minute=args.videos_per_minute,
        time_scale=args.time_scale,
        outages=tuple(args.outage),
        balance_usd=args.balance,
        activated=not args.not_activated,
        output_host=args.output_host,
        output_style=args.output_style,
        webhook_secret=args.webhook_secret,
        webhook_delay_seconds=args.webhook_delay_seconds,
        webhook_body=args.webhook_body,
        webhook_attempts=args.webhook_attempts,
        webhook_timeout_seconds=args.webhook_timeout,
        **{
            field: getattr(args, f"webhook_{suffix.replace('-', '_')}_rate")
            for suffix, field in _WEBHOOK_RATES.items()
        },
        public_base_url=args.public_base_url,
        seeded_predictions=tuple(args.seed_prediction),
        verbose=args.verbose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        sim = WaveSpeedSimulator(config)
    except ValueError as problem:
        raise SystemExit(f"python -m kling_local.simulator: {problem}") from None
    sim.start()
    try:
        # Inside the try: a Ctrl-C right after the banner must still end cleanly.
        print(
            f"WaveSpeed simulator listening on {sim.base_url} (api key: {config.api_key})",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
