"""Reads what the pipeline knows about jobs: the jobs table, the workflow, the video sidecar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import ClientError

from kling_pipeline.job.record import QUEUED, STATUSES, JobRecord, job_key
from kling_pipeline.settings import Settings
from kling_pipeline.types import Json

from .resources import Resources

__all__ = ["ENDED_BADLY", "QUEUED", "STATUSES", "Execution", "JobReader", "JobRecord", "Json"]

#: The finalize function writes each job's sidecar here (Settings.videos_prefix, not a
#: template parameter, so the deployed value is the default).
VIDEOS_PREFIX = Settings().videos_prefix
#: Execution statuses that end a workflow without its own failure notification step.
ENDED_BADLY = ("FAILED", "TIMED_OUT", "ABORTED")


@dataclass(frozen=True)
class Execution:
    """The job's Step Functions execution, when one was started."""

    arn: str
    status: str
    started: datetime | None
    stopped: datetime | None
    #: Why a workflow ended without its own failure notification (FAILED, TIMED_OUT, ...).
    error: str | None = None
    cause: str | None = None


class JobReader:
    """Read-only queries over the pipeline's resources; jobs decoded by `JobRecord` alone."""

    def __init__(self, resources: Resources) -> None:
        self._r = resources

    def get(self, job_id: str) -> JobRecord | None:
        item = self._r.dynamodb.get_item(
            TableName=self._r.table, Key=job_key(job_id), ConsistentRead=True
        ).get("Item")
        return JobRecord.from_item(dict(item)) if item else None

    def scan(self, status: str | None = None) -> list[JobRecord]:
        """Every job record (or those a user sees in `status`), newest first.

        A Scan reads the whole table: fine for the thousands of records a 90-day TTL keeps at
        this pipeline's scale. A much busier deployment would want a GSI on created_at instead.
        """
        records: list[JobRecord] = []
        paginator = self._r.dynamodb.get_paginator("scan")
        for page in paginator.paginate(
            TableName=self._r.table,
            FilterExpression="begins_with(pk, :job)",
            ExpressionAttributeValues={":job": {"S": "job#"}},
        ):
            records.extend(JobRecord.from_item(dict(item)) for item in page.get("Items", []))
        if status:
            records = [r for r in records if r.status == status]
        return sorted(records, key=lambda r: (r.first_seen, r.job_id), reverse=True)

    def jobs_of_file(self, bucket: str, key: str) -> list[JobRecord]:
        """The jobs a prompt file fanned out to, found by the `source` each record keeps."""
        return [
            record
            for record in self.scan()
            if record.source.get("type") == "s3"
            and record.source.get("bucket") == bucket
            and record.source.get("key") == key
        ]

    def execution(self, record: JobRecord) -> Execution | None:
        if not record.execution_arn:
            return None
        try:
            answer = self._r.sfn.describe_execution(executionArn=record.execution_arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return None  # Step Functions keeps history for 90 days only
            raise
        return Execution(
            arn=record.execution_arn,
            status=answer["status"],
            started=answer.get("startDate"),
            stopped=answer.get("stopDate"),
            error=answer.get("error"),
            cause=answer.get("cause"),
        )

    def outputs(self, job_id: str, *, link_expires_s: int) -> list[Json]:
        """The stored videos from the job's sidecar, each with a fresh presigned link.

        The notification's own links were signed by a Lambda role and may already be dead;
        these are signed with the caller's credentials. Flagged (NSFW) videos get no link,
        as in the notification.
        """
        sidecar = self.sidecar(job_id) or {}
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

    def sidecar(self, job_id: str) -> Json | None:
        """The job.json the finalize step writes next to a stored video (None without one)."""
        try:
            body = self._r.s3.get_object(
                Bucket=self._r.videos_bucket, Key=f"{VIDEOS_PREFIX}{job_id}/job.json"
            )["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied"):
                return None
            raise
        sidecar = json.loads(body)
        return sidecar if isinstance(sidecar, dict) else None

    @staticmethod
    def error(record: JobRecord) -> Json | None:
        """Why a job failed or was rejected: stored with its terminal notification."""
        if record.status not in ("failed", "rejected") or record.terminal_error is None:
            return None
        return record.terminal_error.to_json()
