"""The `kling-pipeline` command: submit, status, list and watch against a deployed stack."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kling_pipeline.errors import ValidationError
from kling_pipeline.job.prompt_file import PromptFileRejected, parse_prompt_file
from kling_pipeline.job.request import ASPECT_RATIOS, DURATIONS, JobRequest, parse_job_object
from kling_pipeline.settings import Settings

from . import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE
from .errors import CliError
from .follow import Emit, Follower, FollowResult, Sleep, Tracked
from .gallery import render_gallery
from .gallery_rows import parse_since, row_from_record, seen_since
from .jobs import STATUSES, Execution, JobReader, JobRecord, Json
from .resources import DEFAULT_STACK, STACK_OUTPUTS, Connection, Resources, resolve_resources
from .restore import add_parser as add_restore_parser
from .restore import cmd_restore

PROG = "kling-pipeline"
ResourcesFactory = Callable[[], Resources]
#: `submit` options that become job message fields (all but the prompt itself).
JOB_OPTIONS = (
    "duration",
    "aspect_ratio",
    "negative_prompt",
    "guidance_scale",
    "enhance_prompt",
    "job_id",
    "metadata",
)
EPILOG = """\
resources come from the CloudFormation stack's Outputs (--stack, default $KLING_STACK or
kling-pipeline); --queue-url, --table, ... override them one by one.

exit status: 0 done (every job completed), 1 a job failed or was rejected, an unknown job or an
AWS error, 2 invalid input or usage (nothing was sent), 3 gave up waiting (--timeout).
"""


# --------------------------------------------------------------------------------- the parser
def _connection_options(parser: argparse.ArgumentParser, *, nested: bool) -> None:
    """The same options on the main parser and every subcommand, so either position works.

    On subcommands the default is SUPPRESS: an option left out there must not overwrite the
    value given before the subcommand.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if nested else value

    group = parser.add_argument_group("where the pipeline is")
    group.add_argument(
        "--stack",
        default=default(os.environ.get("KLING_STACK") or DEFAULT_STACK),
        help="CloudFormation stack to read resource names from (default: $KLING_STACK or "
        f"{DEFAULT_STACK})",
    )
    group.add_argument(
        "--region",
        default=default(None),
        help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, then the profile's)",
    )
    group.add_argument("--profile", default=default(None), help="AWS named profile")
    group.add_argument(
        "--endpoint-url",
        default=default(None),
        help="send every AWS call here (a local moto server, LocalStack); on a loopback "
        "address the CLI uses inert credentials and, if none is set, region us-east-1",
    )
    for output, (name, flag) in STACK_OUTPUTS.items():
        group.add_argument(
            flag,
            dest=name,
            default=default(None),
            help=argparse.SUPPRESS if nested else f"instead of the stack's {output} output",
        )


def _follow_options(parser: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between checks (default 5)"
    )
    if timeout:
        parser.add_argument(
            "--timeout",
            type=float,
            default=3900.0,
            help="give up after this many seconds, exit 3 (default 3900: the pipeline's own "
            "60-minute deadline plus queueing)",
        )
    _link_option(parser)


def _link_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--link-expires",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of the presigned links printed (default 3600; your credentials' own "
        "expiry also ends them)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Send prompts to a deployed Kling V2.0 pipeline and follow them to the video.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, nested=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser(
        "submit",
        help="queue one prompt (or upload a prompt file)",
        description="Queue one job, validated locally first; or upload a prompt file "
        "(.txt, .json, .jsonl) to the prompts bucket.",
    )
    submit.add_argument("prompt", nargs="?", metavar="PROMPT", help="the text to turn into video")
    submit.add_argument("--file", type=Path, help="a prompt file to upload instead of PROMPT")
    job = submit.add_argument_group("job options (with PROMPT)")
    job.add_argument("--duration", type=int, choices=DURATIONS, help="seconds (default 5)")
    job.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, help="default 16:9")
    job.add_argument("--negative-prompt", help="what the video should avoid")
    job.add_argument("--guidance-scale", type=float, help="0 to 1 (API default 0.5)")
    job.add_argument(
        "--enhance-prompt",
        action="store_true",
        default=None,
        help="run WaveSpeed's prompt optimizer first",
    )
    job.add_argument("--job-id", help="your id for the job (default: cli-<random>)")
    job.add_argument("--metadata", metavar="JSON", help="a JSON object echoed in the notification")
    submit.add_argument(
        "--wait", action="store_true", help="follow the job(s) to the end and print the video"
    )
    _follow_options(submit)
    _connection_options(submit, nested=True)

    status = commands.add_parser("status", help="one job's state, video or error")
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _link_option(status)
    _connection_options(status, nested=True)

    listing = commands.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    listing.add_argument("--state", choices=STATUSES, help="only jobs in this state")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _connection_options(listing, nested=True)

    gallery = commands.add_parser(
        "gallery",
        help="an HTML page of recent jobs: videos, prompts, errors, cost",
        description="Write one self-contained HTML page of recent jobs, newest first: each "
        "job's video (presigned link), prompt and parameters, status, error, cost and timings.",
    )
    gallery.add_argument(
        "--since", metavar="AGE|DATE", help="jobs seen since: 24h, 90m, 7d, or 2025-06-01"
    )
    gallery.add_argument("--state", choices=STATUSES, help="only jobs in this state")
    gallery.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    gallery.add_argument(
        "--out", type=Path, default=Path("gallery.html"), help="default gallery.html"
    )
    _link_option(gallery)
    _connection_options(gallery, nested=True)

    watch = commands.add_parser(
        "watch",
        help="one line per state change until the jobs end",
        description="Follow the given jobs (default: every unfinished job) until each ends.",
    )
    watch.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    _follow_options(watch)
    _connection_options(watch, nested=True)

    add_restore_parser(commands)
    _connection_options(commands.choices["restore"], nested=True)
    return parser


def _connection(args: argparse.Namespace) -> Connection:
    return Connection(
        stack=args.stack,
        region=args.region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        overrides={name: getattr(args, name) for name, _flag in STACK_OUTPUTS.values()},
    )


# ------------------------------------------------------------------------------- formatting
def _when(value: str | datetime | None) -> str:
    if value is None or value == "":
        return "-"
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        return str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_outcome(job: Tracked) -> None:
    """The end of one job as the user wants it: where the video is, or why there is none."""
    if job.outcome == "completed":
        print(f"completed {job.job_id}")
        _print_outputs(job.outputs)
    else:
        print(f"{job.outcome} {job.job_id}: {_reason(job.error)}")


def _print_outputs(outputs: list[Json]) -> None:
    if not outputs:
        print("  video  (no sidecar found in the videos bucket)")
    for output in outputs:
        print(f"  video  {output.get('uri')}  ({output.get('size')} bytes)")
        if output.get("url"):
            print(f"  link   {output['url']}")
        else:
            print("  link   none: flagged NSFW and quarantined; fetch it with your credentials")


def _reason(error: Json | None) -> str:
    if not error:
        return "no reason recorded (see the job's notification)"
    return f"{error.get('code')}: {error.get('message')}"


# ------------------------------------------------------------------------------ submit
def _job_object(args: argparse.Namespace) -> Json:
    obj: Json = {"prompt": args.prompt}
    for name in JOB_OPTIONS:
        value = getattr(args, name)
        if value is not None and name != "metadata":
            obj[name] = value
    if args.metadata is not None:
        try:
            obj["metadata"] = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise CliError(f"--metadata is not valid JSON: {exc.msg}", EXIT_USAGE) from None
    obj.setdefault("job_id", f"cli-{uuid.uuid4().hex[:20]}")
    return obj


def validate_job(args: argparse.Namespace) -> JobRequest:
    """The job exactly as the pipeline will validate it, so a mistake costs nothing."""
    try:
        return parse_job_object(_job_object(args))
    except ValidationError as exc:
        raise CliError(f"invalid job, nothing sent: {exc.message}", EXIT_USAGE) from None


def _follower(
    args: argparse.Namespace, resources: Resources, sleep: Sleep, *, emit: Emit
) -> Follower:
    return Follower(
        JobReader(resources),
        emit=emit,
        sleep=sleep,
        interval_s=args.interval,
        timeout_s=args.timeout,
        link_expires_s=args.link_expires,
    )


def _finish(result: FollowResult, *, what: str) -> int:
    for job in result.jobs:
        if job.ended:
            _print_outcome(job)
    if result.timed_out:
        waiting = [job for job in result.jobs if not job.ended]
        for job in waiting:
            _err(f"still {job.outcome}: {job.job_id}")
        ids = " ".join(job.job_id for job in waiting) or "(jobs not found yet)"
        _err(f"gave up waiting for {what}; keep following with: {PROG} watch {ids}")
        return EXIT_TIMEOUT
    return EXIT_OK if result.all_completed else EXIT_FAILED


def cmd_submit(args: argparse.Namespace, resources: ResourcesFactory, sleep: Sleep) -> int:
    if args.file is not None:
        return _submit_file(args, resources, sleep)
    job = validate_job(args)
    r = resources()
    message_id = r.sqs.send_message(QueueUrl=r.queue_url, MessageBody=json.dumps(job.to_message()))[
        "MessageId"
    ]
    job_id = job.job_id or ""
    print(f"queued job {job_id} (SQS message {message_id})")
    if not args.wait:
        print(f"follow it with: {PROG} watch {job_id}")
        return EXIT_OK
    result = _follower(args, r, sleep, emit=_err).run([job_id])
    return _finish(result, what=f"job {job_id}")


def _submit_file(args: argparse.Namespace, resources: ResourcesFactory, sleep: Sleep) -> int:
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    # A unique key per upload: the pipeline reads the object when its event is processed, so
    # two uploads of one file name under one key could both run the second file's jobs.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    key = f"prompts/{stamp}-{uuid.uuid4().hex[:6]}-{path.name}"
    limits = Settings()
    try:
        entries = parse_prompt_file(
            key, data, max_bytes=limits.max_prompt_file_bytes, max_jobs=limits.max_jobs_per_file
        )
    except PromptFileRejected as exc:
        message = exc.message.replace(key, str(path))
        raise CliError(f"invalid prompt file, nothing uploaded: {message}", EXIT_USAGE) from None
    invalid = [e for e in entries if e.error is not None]
    if invalid:
        for entry in invalid:
            where = entry.label.replace(key, str(path))
            _err(f"{where}: {entry.error.message if entry.error else ''}")
        raise CliError(
            f"{len(invalid)} of {len(entries)} jobs in {path} are invalid, nothing uploaded",
            EXIT_USAGE,
        )
    r = resources()
    content_type = "text/plain" if key.endswith(".txt") else "application/json"
    r.s3.put_object(Bucket=r.prompts_bucket, Key=key, Body=data, ContentType=content_type)
    explicit = [e.job.job_id for e in entries if e.job is not None and e.job.job_id]
    derived = len(entries) - len(explicit)
    print(f"uploaded s3://{r.prompts_bucket}/{key} ({len(entries)} jobs)")
    print(f"key {key}")
    if derived:
        unit = "line" if key.lower().endswith(".jsonl") else "item"
        print(
            f"note: job ids are derived per {unit}: the {derived} job(s) without a job_id get "
            f"file-<hash of this upload>-<{unit}>, known once the pipeline reads the file "
            f"(see: {PROG} list)"
        )
    if explicit:
        print(f"job ids from the file: {', '.join(explicit)}")
    if not args.wait:
        return EXIT_OK
    reader = JobReader(r)
    explicit_set = set(explicit)

    def discover() -> list[str]:
        found = reader.jobs_of_file(r.prompts_bucket, key)
        return sorted(v.job_id for v in found if v.job_id not in explicit_set)

    result = _follower(args, r, sleep, emit=_err).run(
        explicit, discover=discover, expected_discoveries=derived
    )
    return _finish(result, what=f"the jobs of {path.name}")


# ------------------------------------------------------------------------------ status
def _job_json(view: JobRecord) -> Json:
    return {
        "job_id": view.job_id,
        "state": view.status,
        "prediction_id": view.prediction_id,
        "created_at": view.created_at,
        "submitted_at": view.submitted_at,
        "notified_at": view.notified_at,
        "input": view.job_input,
        "source": view.source,
    }


def _status_json(
    view: JobRecord, execution: Execution | None, outputs: list[Json], error: Json | None
) -> Json:
    workflow = None
    if execution is not None:
        workflow = {
            "arn": execution.arn,
            "status": execution.status,
            "started_at": execution.started.isoformat() if execution.started else None,
            "stopped_at": execution.stopped.isoformat() if execution.stopped else None,
        }
    return {**_job_json(view), "execution": workflow, "outputs": outputs, "error": error}


def cmd_status(args: argparse.Namespace, resources: ResourcesFactory, sleep: Sleep) -> int:
    r = resources()
    reader = JobReader(r)
    view = reader.get(args.job_id)
    if view is None:
        raise CliError(
            f"no job {args.job_id!r} in table {r.table} (a job sent moments ago may still be "
            "queued; records expire after 90 days)"
        )
    execution = reader.execution(view)
    outputs = (
        reader.outputs(view.job_id, link_expires_s=args.link_expires)
        if view.status == "completed"
        else []
    )
    error = reader.error(view)
    if args.json:
        print(json.dumps(_status_json(view, execution, outputs, error), indent=2))
        return EXIT_FAILED if view.status in ("failed", "rejected") else EXIT_OK
    rows = [
        ("job", view.job_id),
        ("state", view.status),
        ("prompt", _prompt_line(view.job_input)),
        ("prediction", view.prediction_id or "-"),
        ("created", _when(view.created_at)),
        ("submitted", _when(view.submitted_at)),
        ("notified", _when(view.notified_at)),
    ]
    if execution is not None:
        rows.append(
            (
                "workflow",
                f"{execution.status} (started {_when(execution.started)}, "
                f"stopped {_when(execution.stopped)})",
            )
        )
    for label, value in rows:
        print(f"{label:<11}{value}")
    if view.status == "completed":
        _print_outputs(outputs)
    elif view.status in ("failed", "rejected"):
        print(f"{'error':<11}{_reason(error)}")
        return EXIT_FAILED
    return EXIT_OK


def _prompt_line(job: Json) -> str:
    prompt = str(job.get("prompt") or "-")
    if len(prompt) > 60:
        prompt = prompt[:57] + "..."
    if "duration" in job:
        prompt += f"  ({job.get('duration')} s, {job.get('aspect_ratio')})"
    return prompt


# ------------------------------------------------------------------------------ list / watch
def cmd_list(args: argparse.Namespace, resources: ResourcesFactory, sleep: Sleep) -> int:
    views = JobReader(resources()).scan(status=args.state)[: args.limit]
    if args.json:
        print(json.dumps([_job_json(v) for v in views], indent=2))
        return EXIT_OK
    if not views:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
        return EXIT_OK
    rows = [("JOB ID", "STATE", "CREATED", "PREDICTION")]
    rows += [(v.job_id, v.status, _when(v.first_seen), v.prediction_id or "-") for v in views]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for *padded, last in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(padded, widths, strict=True)), last]))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, resources: ResourcesFactory, sleep: Sleep) -> int:
    r = resources()
    job_ids: list[str] = list(dict.fromkeys(args.job_ids))
    if not job_ids:
        job_ids = [v.job_id for v in JobReader(r).scan() if not v.terminal]
        if not job_ids:
            print("no unfinished jobs")
            return EXIT_OK
    result = _follower(args, r, sleep, emit=print).run(job_ids)
    counts: dict[str, int] = {}
    for job in result.jobs:
        counts[job.outcome] = counts.get(job.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    print(f"{len(result.jobs)} job(s): {summary}")
    if result.timed_out:
        _err(f"gave up after {args.timeout:g} s")
        return EXIT_TIMEOUT
    return EXIT_OK if result.all_completed else EXIT_FAILED


def cmd_gallery(args: argparse.Namespace, resources: ResourcesFactory, sleep: Sleep) -> int:
    try:
        since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    r = resources()
    reader = JobReader(r)
    records = [v for v in reader.scan(status=args.state) if since is None or seen_since(v, since)]
    rows = []
    for record in records[: args.limit]:
        stored = record.status == "completed"
        rows.append(
            row_from_record(
                record,
                outputs=reader.outputs(record.job_id, link_expires_s=args.link_expires)
                if stored
                else [],
                error=reader.error(record),
                sidecar=reader.sidecar(record.job_id) if stored else None,
            )
        )
    filters = [f"state {args.state}" if args.state else "", f"since {args.since}" if since else ""]
    subtitle = ", ".join(f for f in [*filters, f"links valid {args.link_expires} s"] if f)
    page = render_gallery(rows, title=f"{PROG}: {r.table}", subtitle=subtitle)
    try:
        args.out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}", EXIT_USAGE) from None
    print(f"wrote {args.out} ({len(rows)} of {len(records)} job(s))")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, ResourcesFactory, Sleep], int]] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "list": cmd_list,
    "watch": cmd_watch,
    "restore": cmd_restore,
    "gallery": cmd_gallery,
}


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "submit":
        if (args.prompt is None) == (args.file is None):
            parser.error("submit takes either PROMPT or --file")
        if args.file is not None and any(getattr(args, name) is not None for name in JOB_OPTIONS):
            parser.error("job options go inside the prompt file, not on the command line")
    for name in ("interval", "timeout", "limit", "link_expires"):
        if getattr(args, name, 1) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")


def main(
    argv: Sequence[str] | None = None,
    *,
    resources: Resources | None = None,
    sleep: Sleep = time.sleep,
) -> int:
    """Runs one command; `resources` and `sleep` are injected by tests (moto, pipeline driver)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_usage(parser, args)
    except SystemExit as exc:  # argparse reports usage errors (2) and --help (0) this way
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    cached: list[Resources] = [resources] if resources is not None else []

    def lazy_resources() -> Resources:
        # Resolved only when a command needs AWS: a job that fails validation sends nothing.
        if not cached:
            cached.append(resolve_resources(_connection(args)))
        return cached[0]

    try:
        return COMMANDS[args.command](args, lazy_resources, sleep)
    except CliError as exc:
        _err(f"{PROG}: {exc.message}")
        return exc.exit_code
    except (ClientError, BotoCoreError) as exc:
        _err(f"{PROG}: AWS error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted")
        return 130
