"""Local servers for the copy benchmarks, in their own process: moto S3 or WaveSpeed simulators.

Usage: `python -m bench._servers s3`, `python -m bench._servers sim SIZE [SIZE ...]` (SIZE in
bytes, or `default` for the simulator's small sample video) or `python -m bench._servers
slow-submit SECONDS` (a simulator holding every submit answer that long). Prints one JSON line
with the addresses, then serves until stdin is closed.

S3 and WaveSpeed's CDN are remote in production. Serving them from the measuring process
would charge the copier for the servers' Python work under the same GIL, and moto holds a
whole object in memory while it completes a multipart upload, which must not land in the
process whose memory is being measured.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

from kling_local.simulator import SimulatorConfig, WaveSpeedSimulator

LOOPBACK = "127.0.0.1"


def serve_s3() -> tuple[dict[str, str], Callable[[], None]]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise SystemExit(
            f"moto's server extra is not installed ({exc}): pip install 'moto[server]'"
        ) from None

    # werkzeug logs every request; a 500 MB upload is hundreds of them.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return {"endpoint_url": f"http://{host}:{port}"}, server.stop


def serve_simulators(sizes: list[str]) -> tuple[dict[str, dict[str, str]], Callable[[], None]]:
    simulators: dict[str, WaveSpeedSimulator] = {}
    for size in sizes:
        # Outputs are ready at once: the copy, not the generation, is what is measured.
        config = SimulatorConfig(
            host=LOOPBACK,
            generation_seconds=0.0,
            processing_after_seconds=0.0,
            output_size=None if size == "default" else int(size),
        )
        simulators[size] = WaveSpeedSimulator(config).start()
    addresses = {
        size: {
            "base_url": sim.base_url,
            "host_port": sim.host_port,
            "api_key": sim.config.api_key,
        }
        for size, sim in simulators.items()
    }

    def stop() -> None:
        for sim in simulators.values():
            sim.stop()

    return addresses, stop


def main(argv: list[str]) -> int:
    role, *rest = argv
    if role == "s3":
        addresses, stop = serve_s3()
        announcement: dict[str, object] = dict(addresses)
    elif role == "slow-submit" and len(rest) == 1:
        sim = WaveSpeedSimulator(
            SimulatorConfig(host=LOOPBACK, submit_latency_seconds=float(rest[0]))
        ).start()
        announcement = {"base_url": sim.base_url, "api_key": sim.config.api_key}
        stop = sim.stop
    elif role == "sim" and rest:
        simulators, stop = serve_simulators(rest)
        announcement = {"simulators": simulators}
    else:
        print("usage: python -m bench._servers s3 | sim SIZE [SIZE ...]", file=sys.stderr)
        return 2
    print(json.dumps(announcement), flush=True)
    try:
        sys.stdin.read()  # EOF: the parent is done (or gone)
    finally:
        stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
