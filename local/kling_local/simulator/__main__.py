"""Command line: `python -m kling_local.simulator --port N` serves the simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .config import OUTAGE_FORMS, OUTAGE_TARGETS, OUTPUT_STYLES, TIERS, Outage, SimulatorConfig
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
    parser.add_argument("--public-base-url", default=None)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


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
        public_base_url=args.public_base_url,
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
