"""Reads what the pipeline knows about jobs: the jobs table, the workflow, the video sidecar."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from kling_pipeline.ledger import TERMINAL
from kling_pipeline.settings import Settings

from .resources import Resources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import ScanInputPaginateTypeDef

Json = dict[str, Any]
#: A job whose message is still on the queue has no record yet; the CLI calls that "queued".
QUEUED = "queued"
STATES = ("submitting", "submitted", "running", *TERMINAL)
#: The finalize function writes each job's sidecar here (Settings.videos_prefix, not a
#: template parameter, so the deployed value is the default).
VIDEOS_PREFIX = Settings().videos_prefix
#: How many receive calls a dead-letter queue peek may make before giving up.
DLQ_PEEK_ROUNDS = 10
#: Execution statuses that end a workflow without its own failure notification step.
ENDED_BADLY = ("FAILED", "TIMED_OUT", "ABORTED")


def _text(item: Json, name: str) -> str | None:
    value = item.get(name) or {}
    text = value.get("S")
    return str(text) if text is not None else None


def _json(item: Json, name: str) -> Json:
    text = _text(item, name)
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


@dataclass(frozen=True)
class JobView:
    """One job's record in the jobs table (`pk = job#<id>`), as the user cares about it."""

    job_id: str
    state: str
    prediction_id: str | None = None
    execution_arn: str | None = None
    terminal_status: str | None = None
    created_at: str | None = None
    submitted_at: str | None = None
    notified_at: str | None = None
    job: Json = field(default_factory=dict)
    source: Json = field(default_factory=dict)

    @classmethod
    def from_item(cls, item: Json) -> JobView:
        pk = _text(item, "pk") or ""
        return cls(
            job_id=_text(item, "job_id") or pk.removeprefix("job#"),
            # A rejected job's record is written by the notifier alone, state included.
            state=_text(item, "state") or _text(item, "terminal_status") or "",
            prediction_id=_text(item, "prediction_id"),
            execution_arn=_text(item, "execution_arn"),
            terminal_status=_text(item, "terminal_status"),
            created_at=_text(item, "created_at"),
            submitted_at=_text(item, "submitted_at"),
            notified_at=_text(item, "notified_at"),
            job=_json(item, "job"),
            source=_json(item, "source"),
        )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def first_seen(self) -> str:
        """When the job appeared; rejected jobs only have their notification time."""
        return self.created_at or self.notified_at or ""


@dataclass(frozen=True)
class Execution:
    """The job's Step Functions execution, when one was started."""

    arn: str
    status: str
    started: datetime | None
    stopped: datetime | None
    output: Json
    error: str | None
    cause: str | None


class JobReader:
    """Read-only queries over the pipeline's resources."""

    def __init__(self, resources: Resources) -> None:
        self._r = resources

    def get(self, job_id: str) -> JobView | None:
        item = self._r.dynamodb.get_item(
            TableName=self._r.table, Key={"pk": {"S": f"job#{job_id}"}}, ConsistentRead=True
        ).get("Item")
        return JobView.from_item(dict(item)) if item else None

    def scan(self, state: str | None = None) -> list[JobView]:
        """Every job record, newest first.

        A Scan reads the whole table: fine for the thousands of records a 90-day TTL keeps at
        this pipeline's scale. A much busier deployment would want a GSI on created_at instead.
        """
        request: ScanInputPaginateTypeDef = {
            "TableName": self._r.table,
            "FilterExpression": "begins_with(pk, :job)",
            "ExpressionAttributeValues": {":job": {"S": "job#"}},
        }
        if state:
            request["FilterExpression"] += " AND #s = :state"
            request["ExpressionAttributeNames"] = {"#s": "state"}
            request["ExpressionAttributeValues"] = {":job": {"S": "job#"}, ":state": {"S": state}}
        views: list[JobView] = []
        for page in self._r.dynamodb.get_paginator("scan").paginate(**request):
            views.extend(JobView.from_item(dict(item)) for item in page.get("Items", []))
        return sorted(views, key=lambda v: (v.first_seen, v.job_id), reverse=True)

    def jobs_of_file(self, bucket: str, key: str) -> list[JobView]:
        """The jobs a prompt file fanned out to, found by the `source` each record keeps."""
        return [
            view
            for view in self.scan()
            if view.source.get("type") == "s3"
            and view.source.get("bucket") == bucket
            and view.source.get("key") == key
        ]

    def execution(self, view: JobView) -> Execution | None:
        if not view.execution_arn:
            return None
        try:
            answer = self._r.sfn.describe_execution(executionArn=view.execution_arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return None  # Step Functions keeps history for 90 days only
            raise
        try:
            output = json.loads(answer.get("output") or "{}")
        except json.JSONDecodeError:
            output = {}
        return Execution(
            arn=view.execution_arn,
            status=answer["status"],
            started=answer.get("startDate"),
            stopped=answer.get("stopDate"),
            output=output if isinstance(output, dict) else {},
            error=answer.get("error"),
            cause=answer.get("cause"),
        )

    def outputs(self, job_id: str, *, link_expires_s: int) -> list[Json]:
        """The stored videos from the job's sidecar, each with a fresh presigned link.

        The notification's own links were signed by a Lambda role and may already be dead;
        these are signed with the caller's credentials. Flagged (NSFW) videos get no link,
        as in the notification.
        """
        try:
            body = self._r.s3.get_object(
                Bucket=self._r.videos_bucket, Key=f"{VIDEOS_PREFIX}{job_id}/job.json"
            )["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied"):
                return []
            raise
        sidecar = json.loads(body)
        outputs: list[Json] = []
        for stored in sidecar.get("outputs") or []:
            output = dict(stored)
            if not output.get("nsfw"):
                output["url"] = self._r.s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": output["bucket"], "Key": output["key"]},
                    ExpiresIn=link_expires_s,
                )
            outputs.append(output)
        return outputs

    def error(self, view: JobView, execution: Execution | None) -> Json | None:
        """Why a job failed or was rejected, from wherever the pipeline left the reason.

        The jobs table holds no error: a workflow failure is in the execution's output, a
        refusal before any workflow (invalid job, budget, ambiguous submit) in the reason
        attributes of the message parked in the dead-letter queue.
        """
        if view.state not in ("failed", "rejected"):
            return None
        if execution is None:
            return self.dead_letter_reason(view.job_id)
        failure = execution.output.get("failure")
        if isinstance(failure, dict) and isinstance(failure.get("error"), dict):
            return dict(failure["error"])
        if execution.status in ENDED_BADLY:
            return {"code": execution.error or execution.status, "message": execution.cause}
        return None  # still RUNNING: the failure step has notified but not returned yet

    def dead_letter_reason(self, job_id: str) -> Json | None:
        """Peeks (zero visibility timeout, nothing deleted) at the DLQ for the job's message."""
        queue = self._r.dead_letter_queue_url
        if not queue:
            return None
        seen: set[str] = set()
        for _ in range(DLQ_PEEK_ROUNDS):
            messages = self._r.sqs.receive_message(
                QueueUrl=queue,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=0,
            ).get("Messages", [])
            fresh = [m for m in messages if m.get("MessageId") not in seen]
            if not fresh:
                return None
            for message in fresh:
                seen.add(message.get("MessageId", ""))
                attributes = message.get("MessageAttributes", {})
                if _attribute(attributes, "job_id") == job_id or _body_job_id(message) == job_id:
                    return {
                        "code": _attribute(attributes, "error_code") or "dead_lettered",
                        "message": _attribute(attributes, "reason")
                        or "the message is in the dead-letter queue",
                    }
        return None


def _attribute(attributes: Any, name: str) -> str | None:
    value = attributes.get(name) or {}
    text = value.get("StringValue")
    return str(text) if text is not None else None


def _body_job_id(message: Any) -> str | None:
    try:
        body = json.loads(message.get("Body") or "")
    except json.JSONDecodeError:
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return str(job_id) if job_id is not None else None
