"""Command line for the local run: `python -m kling_local.runner --prompt "..." --out DIR`."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from .cfn import TEMPLATE, parse
from .parameters import ParameterError, parse_overrides, validate_overrides
from .pipeline import LocalOptions, LocalPipeline, RunResult
from .simulator import SimulatorConfig

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEMO_PROMPT = (
    "A red fox trots across a snowy meadow at sunrise, breath steaming, cinematic slow motion"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kling_local.runner",
        description="Run the whole Kling pipeline locally: moto AWS from template.yaml, the real "
        "state machine, the handlers in-process, and the WaveSpeed simulator (or --api-base).",
    )
    parser.add_argument(
        "--prompt", action="append", default=[], help="queue a job with this prompt"
    )
    parser.add_argument(
        "--messages", type=Path, help="file with one raw SQS message body per line, sent as-is"
    )
    parser.add_argument(
        "--upload", action="append", type=Path, default=[], help="upload a prompt file to S3"
    )
    parser.add_argument("--api-base", help="WaveSpeed base URL instead of the built-in simulator")
    parser.add_argument(
        "--allow-output-host",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="local runs only: also download outputs from this address (plain http too)",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, as sam deploy takes them (e.g. PollDeadlineSeconds=600 "
        "DailyBudgetUsd=5); checked against the template before anything runs",
    )
    parser.add_argument("--out", type=Path, help="copy produced objects and notifications here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--generation-seconds",
        type=float,
        default=2.0,
        help="simulator: how long a generation takes (default 2)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="give up after this many seconds"
    )
    parser.add_argument(
        "--demo", action="store_true", help="queue one example prompt when no input is given"
    )
    parser.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="keep running and serve the local AWS endpoint on 127.0.0.1:PORT (stack "
        "kling-local) for the kling-pipeline CLI; Ctrl-C stops",
    )
    return parser


def checked_overrides(arguments: list[str]) -> dict[str, str]:
    """The overrides the template accepts; ParameterError before anything starts otherwise."""
    declared = parse(TEMPLATE.read_text()).get("Parameters", {})
    return validate_overrides(declared, parse_overrides(arguments))


def message_lines(data: bytes) -> list[str]:
    """The message bodies of a `--messages` file: one per line, blank lines skipped.

    Only a newline ends a line (with an optional carriage return before it): `splitlines()`
    would also split on U+2028, form feeds and other characters that JSON strings and prompts
    may hold raw, turning one paid job into two. A byte-order mark belongs to the file.
    """
    text = data.decode("utf-8-sig")
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip()]


def _feed(
    pipeline: LocalPipeline,
    prompts: list[str],
    messages: Path | None,
    uploads: list[Path],
    progress: TextIO | None,
) -> None:
    for prompt in prompts:
        pipeline.send_prompt(prompt)
    if messages:
        for line in message_lines(messages.read_bytes()):
            pipeline.send_message(line)
    for path in uploads:
        key = pipeline.upload(path.name, path.read_bytes())
        if progress:
            print(f"uploaded s3://{pipeline.prompts_bucket}/{key}", file=progress)


def _serve(pipeline: LocalPipeline) -> int:
    pipeline.publish_stack("kling-local")
    print(
        f"serving the local pipeline: AWS endpoint {pipeline.endpoint_url}, stack kling-local\n"
        f"  kling-pipeline --stack kling-local --endpoint-url {pipeline.endpoint_url} "
        'submit "a red fox in snow" --wait',
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    try:
        pipeline.serve_forever(stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _report(pipeline: LocalPipeline, result: RunResult, out: Path | None) -> int:
    """Prints what the run produced (one JSON summary per job on stdout); the exit status."""
    if out:
        for path in pipeline.export(out):
            if path.suffix == ".mp4":
                print(f"video copied to {path}", file=sys.stderr)
    for note in result.notifications:
        summary = {
            "job_id": note["job_id"],
            "status": note["status"],
            # Stored objects by their S3 URI; a failed job's unstored video by its source.
            "outputs": [o.get("uri") or o.get("source_url") for o in note.get("outputs", [])],
            "error": note.get("error"),
        }
        print(json.dumps(summary))
    if pipeline.webhooks_off_reason:
        polled = {n["job_id"] for n in result.notifications if n.get("request_id")}
        print(f"{len(polled)} job(s) polled without a webhook", file=sys.stderr)
    if out:
        print(f"wrote {out / 'notifications.jsonl'}", file=sys.stderr)
        print(f"gallery: {(out / 'index.html').resolve()}", file=sys.stderr)
    if result.unfinished:
        print(
            f"{len(result.unfinished)} job(s) did not reach a terminal notification: "
            + ", ".join(result.unfinished[:10]),
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prompts = list(args.prompt)
    if args.demo and not (prompts or args.messages or args.upload):
        prompts.append(DEMO_PROMPT)
    if not (prompts or args.messages or args.upload or args.serve is not None):
        print("nothing to run: give --prompt, --messages, --upload or --serve", file=sys.stderr)
        return 2
    missing = [
        p for p in [*args.upload, *([args.messages] if args.messages else [])] if not p.is_file()
    ]
    if missing:
        print(f"no such file: {missing[0]}", file=sys.stderr)
        return 2
    try:
        overrides = checked_overrides(args.parameter_overrides)
    except ParameterError as exc:
        print(f"--parameter-overrides refused, nothing was run: {exc}", file=sys.stderr)
        return 2
    progress = None if args.quiet else sys.stderr
    options = LocalOptions(
        parameter_overrides=overrides,
        api_base=args.api_base,
        simulator=SimulatorConfig(generation_seconds=args.generation_seconds),
        allow_output_hosts=list(args.allow_output_host),
        progress=progress,
        serve_port=args.serve,
    )
    if args.api_base and urlsplit(args.api_base).hostname not in LOOPBACK_HOSTS:
        # Real generations take minutes: poll like production does (test servers stay fast).
        options.poll_first_wait_s, options.poll_interval_s = 30, 10
        options.poll_deadline_s = 3600
    try:
        pipeline = LocalPipeline(options).__enter__()
    except Exception as exc:  # noqa: BLE001 - the run could not start: say why
        print(f"could not start the local pipeline: {exc}", file=sys.stderr)
        return 1
    try:
        if progress and pipeline.simulator:
            print(f"WaveSpeed simulator at {pipeline.simulator.base_url}", file=progress)
        if pipeline.webhooks_off_reason:
            # Not progress: the run works differently from what the stack asks, so even
            # --quiet says it once.
            print(
                f"webhooks off for this run: {pipeline.webhooks_off_reason}; jobs are "
                "submitted without a webhook and polled on the Poll* schedule",
                file=sys.stderr,
            )
        _feed(pipeline, prompts, args.messages, args.upload, progress)
        if args.serve is not None:
            return _serve(pipeline)
        return _report(pipeline, pipeline.run_until_idle(args.timeout), args.out)
    finally:
        pipeline.close()


if __name__ == "__main__":
    sys.exit(main())
