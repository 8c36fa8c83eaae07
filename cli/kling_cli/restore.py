"""`kling-pipeline restore JOB_ID`: store a failed job's video again, without paying again.

A job whose video exists at WaveSpeed but could not be stored (a host not yet allowed, a
transient download failure) ends `failed`, listing each output's `source_url` and
`source_expires_at` (WaveSpeed deletes outputs 7 days after creating them). Once the cause is
fixed, this command starts the job's workflow again in re-store mode: it reads the prediction's
result with one status read, runs only the store step and publishes `completed`. That second
terminal notification is the one exception to "one notification per job", allowed because the
first said `failed` with the video's source URLs. No submit is ever sent: the prediction id
comes from the job record.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace

from kling_pipeline.job.workflow import WAITING, Poll, WorkflowState

from . import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT
from .errors import CliError
from .follow import Sleep
from .jobs import JobReader
from .resources import Resources

#: Step Functions execution names are at most 80 characters.
_NAME_LIMIT = 80


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    restore = commands.add_parser(
        "restore",
        help="store a failed job's video again (no new payment)",
        description="Re-run only the store step of a job that failed after its video was "
        "made (within WaveSpeed's 7 days): one status read, the download, a completed "
        "notification. Never submits again.",
    )
    restore.add_argument("job_id", metavar="JOB_ID")
    restore.add_argument(
        "--interval", type=float, default=5.0, help="seconds between checks (default 5)"
    )
    restore.add_argument(
        "--timeout", type=float, default=1800.0, help="give up waiting after this (default 1800)"
    )


def restore_state(reader: JobReader, job_id: str) -> WorkflowState:
    """The re-store run's execution input, from the job record; CliError when not restorable."""
    record = reader.get(job_id)
    if record is None:
        raise CliError(f"no job {job_id!r}")
    if record.status != "failed":
        raise CliError(
            f"job {job_id} is {record.status or 'unknown'}: only a failed job can be restored"
        )
    state = record.workflow
    if record.prediction_id is None or state is None:
        raise CliError(f"job {job_id} never reached WaveSpeed: there is no video to restore")
    return WorkflowState(
        job=replace(state.job, restore=True),
        prediction_id=record.prediction_id,
        submitted_at=state.submitted_at,
        schedule=state.schedule,
        poll=Poll(status=WAITING, polls=0, wait_seconds=0),
    )


def cmd_restore(args: argparse.Namespace, resources: Callable[[], Resources], sleep: Sleep) -> int:
    aws = resources()
    reader = JobReader(aws)
    state = restore_state(reader, args.job_id)
    name = f"restore-{int(time.time())}-{args.job_id}"[:_NAME_LIMIT]
    arn = aws.sfn.start_execution(
        stateMachineArn=aws.state_machine_arn, name=name, input=json.dumps(state.to_dict())
    )["executionArn"]
    print(f"restoring {args.job_id} (prediction {state.prediction_id}): {arn}")
    deadline = time.monotonic() + args.timeout
    while True:
        described = aws.sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            break
        if time.monotonic() >= deadline:
            print(f"still restoring after {args.timeout:.0f} s; check `status {args.job_id}`")
            return EXIT_TIMEOUT
        sleep(args.interval)
    record = reader.get(args.job_id)
    if record is not None and record.status == "completed":
        print(f"{args.job_id}: completed")
        for output in reader.outputs(args.job_id, link_expires_s=3600):
            print(f"  {output.get('uri')}")
        return EXIT_OK
    print(f"{args.job_id}: not restored: {_why(described.get('output'))}")
    return EXIT_FAILED


def _why(output: str | None) -> str:
    """The failure the re-store run recorded, as one line."""
    try:
        error = (json.loads(output or "{}").get("failure") or {}).get("error") or {}
    except (json.JSONDecodeError, AttributeError):
        error = {}
    if not isinstance(error, dict) or not error:
        return "the run ended without storing the video (see the execution history)"
    return f"{error.get('code')}: {error.get('message')}"
