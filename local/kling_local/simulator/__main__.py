"""Command line: `python -m kling_local.simulator --port N` serves the simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .config import SimulatorConfig
from .core import WaveSpeedSimulator


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
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
    parser.add_argument("--max-concurrency", type=int, default=None)
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
        max_concurrency=args.max_concurrency,
        public_base_url=args.public_base_url,
        verbose=args.verbose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(_parse_args(argv))
    sim = WaveSpeedSimulator(config).start()
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
