"""Job records in DynamoDB: the conditional writes that make one job id cost at most one task.

Why not Powertools Idempotency here: it deletes its record when the wrapped call raises and
re-runs the call once an in-progress record expires. Both would re-send a paid POST whose first
attempt may have created a task, so the submit path keeps its own small state machine:

    (absent) --claim--> submitting --record_prediction--> submitted --mark_started--> running
                           |  lease expired while submitting: outcome unknown, never re-POSTed
                           '--release (provably not accepted: 429, refused, budget)--> (absent)

Terminal notifications are claimed separately (`claim_terminal`) so each job publishes one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SUBMITTING = "submitting"
SUBMITTED = "submitted"
RUNNING = "running"
TERMINAL = ("completed", "failed", "rejected")
#: `redrivable` value of a refused job that never paid: a redrive starts it from scratch.
NEW = "new"
#: How long a terminal claim's holder has to publish before another attempt may take over.
TERMINAL_LEASE_S = 120


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class JobRecord:
    """What the ledger knows about one job."""

    job_id: str
    state: str
    prediction_id: str | None
    lease_until: float
    terminal_status: str | None
    notified: bool
    execution_arn: str | None
    item: dict[str, Any]

    @property
    def lease_expired(self) -> bool:
        return time.time() > self.lease_until


def _record(item: dict[str, Any]) -> JobRecord:
    def s(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value and "S" in value else None

    lease = item.get("lease_until", {}).get("N")
    return JobRecord(
        job_id=s("job_id") or "",
        state=s("state") or "",
        prediction_id=s("prediction_id"),
        lease_until=float(lease) if lease else 0.0,
        terminal_status=s("terminal_status"),
        notified="notified_at" in item,
        execution_arn=s("execution_arn"),
        item=item,
    )


class JobLedger:
    """Conditional writes on the jobs table, one item per job id (`pk = job#<id>`)."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, *, ttl_days: int = 90) -> None:
        self._db = dynamodb
        self._table = table
        self._ttl_s = ttl_days * 86400

    @staticmethod
    def _key(job_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"job#{job_id}"}}

    def get(self, job_id: str) -> JobRecord | None:
        item = self._db.get_item(
            TableName=self._table, Key=self._key(job_id), ConsistentRead=True
        ).get("Item")
        return _record(item) if item else None

    def claim_submission(
        self, job_id: str, *, lease_s: int, job: dict[str, Any], source: dict[str, Any]
    ) -> JobRecord | None:
        """Takes the job for submission; returns None when won, else the existing record."""
        now = time.time()
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **self._key(job_id),
                    "job_id": {"S": job_id},
                    "state": {"S": SUBMITTING},
                    "lease_until": {"N": str(int(now + lease_s))},
                    "job": {"S": json.dumps(job, sort_keys=True)},
                    "source": {"S": json.dumps(source, sort_keys=True)},
                    "created_at": {"S": datetime.now(UTC).isoformat()},
                    "expires_at": {"N": str(int(now + self._ttl_s))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
            return None
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
        existing = self.get(job_id)
        if existing is None:  # released between our write and read: try once more
            return self.claim_submission(job_id, lease_s=lease_s, job=job, source=source)
        return existing

    def release(self, job_id: str) -> None:
        """Forgets a claim whose POST provably created nothing, so a redelivery can retry."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=self._key(job_id),
                ConditionExpression="#s = :submitting",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":submitting": {"S": SUBMITTING}},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def record_prediction(self, job_id: str, prediction_id: str, extra: dict[str, Any]) -> None:
        """Stores the paid task's id before anything else can fail."""
        self._db.update_item(
            TableName=self._table,
            Key=self._key(job_id),
            UpdateExpression="SET #s = :submitted, prediction_id = :p, submitted_at = :t, "
            "execution_input = :x",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":submitted": {"S": SUBMITTED},
                ":p": {"S": prediction_id},
                ":t": {"S": datetime.now(UTC).isoformat()},
                ":x": {"S": json.dumps(extra, sort_keys=True)},
            },
        )

    def mark_started(self, job_id: str, execution_arn: str) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=self._key(job_id),
            UpdateExpression="SET #s = :running, execution_arn = :e",
            ConditionExpression="#s = :submitted",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":running": {"S": RUNNING},
                ":submitted": {"S": SUBMITTED},
                ":e": {"S": execution_arn},
            },
        )

    def claim_terminal(self, job_id: str, status: str, *, lease_s: int = TERMINAL_LEASE_S) -> bool:
        """True when this caller must publish the job's terminal notification.

        The first terminal status wins. A claim whose publish was never confirmed is taken over
        only once its lease has run out (its holder crashed): two deliveries of one job handled
        at the same moment must not both publish.
        """
        now = time.time()
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(job_id),
                UpdateExpression="SET terminal_status = :s, terminal_lease_until = :until, "
                "job_id = :j, expires_at = if_not_exists(expires_at, :ttl)",
                ConditionExpression="attribute_not_exists(terminal_status) OR "
                "(attribute_not_exists(notified_at) AND (attribute_not_exists("
                "terminal_lease_until) OR terminal_lease_until < :now))",
                ExpressionAttributeValues={
                    ":s": {"S": status},
                    ":j": {"S": job_id},
                    ":now": {"N": str(int(now))},
                    ":until": {"N": str(int(now + lease_s))},
                    ":ttl": {"N": str(int(now + self._ttl_s))},
                },
            )
            return True
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def release_terminal(self, job_id: str, status: str) -> None:
        """Gives up a terminal claim whose publish failed, so any later outcome can be sent."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(job_id),
                UpdateExpression="REMOVE terminal_status, terminal_lease_until",
                ConditionExpression="terminal_status = :s AND attribute_not_exists(notified_at)",
                ExpressionAttributeValues={":s": {"S": status}},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def mark_notified(self, job_id: str, status: str) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=self._key(job_id),
            UpdateExpression="SET notified_at = :t, #s = :status",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":t": {"S": datetime.now(UTC).isoformat()},
                ":status": {"S": status},
            },
        )

    def claim_park(self, job_id: str) -> bool:
        """True for the one delivery of a job that parks it in the DLQ (duplicates race here)."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(job_id),
                UpdateExpression="SET parked_at = :t",
                ConditionExpression="attribute_not_exists(parked_at)",
                ExpressionAttributeValues={":t": {"S": datetime.now(UTC).isoformat()}},
            )
            return True
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def release_park(self, job_id: str) -> None:
        """The park failed: let the message's next delivery try again."""
        self._db.update_item(
            TableName=self._table, Key=self._key(job_id), UpdateExpression="REMOVE parked_at"
        )

    def mark_redrivable(self, job_id: str, *, resume_state: str | None) -> None:
        """Lets a redrive of the parked message run the job again.

        `resume_state` None: nothing was paid, the job starts over. `submitted`: a task exists,
        a redrive only starts its workflow with the stored prediction id (never a new POST).
        """
        self._db.update_item(
            TableName=self._table,
            Key=self._key(job_id),
            UpdateExpression="SET redrivable = :r",
            ExpressionAttributeValues={":r": {"S": resume_state or NEW}},
        )

    def reopen(self, job_id: str) -> bool:
        """Undoes a redrivable refusal (a DLQ redrive); other records are left alone."""
        record = self.get(job_id)
        resume = record.item.get("redrivable", {}).get("S") if record else None
        if resume is None:
            return False
        try:
            if resume == NEW:
                self._db.delete_item(
                    TableName=self._table,
                    Key=self._key(job_id),
                    ConditionExpression="redrivable = :r",
                    ExpressionAttributeValues={":r": {"S": resume}},
                )
            else:
                values: dict[str, Any] = {":r": {"S": resume}, ":resume": {"S": resume}}
                self._db.update_item(
                    TableName=self._table,
                    Key=self._key(job_id),
                    UpdateExpression="SET #s = :resume REMOVE terminal_status, "
                    "terminal_lease_until, notified_at, parked_at, redrivable",
                    ConditionExpression="redrivable = :r",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def reserve_budget(self, day: str, amount_usd: float, cap_usd: float) -> bool:
        """Atomically adds `amount_usd` to the day's spend unless that would pass the cap."""
        amount = Decimal(str(round(amount_usd, 2)))
        limit = Decimal(str(round(cap_usd, 2))) - amount
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"budget#{day}"}},
                UpdateExpression="ADD spent_usd :a SET expires_at = :ttl",
                ConditionExpression="(attribute_not_exists(spent_usd) AND :zero <= :limit) "
                "OR spent_usd <= :limit",
                ExpressionAttributeValues={
                    ":a": {"N": str(amount)},
                    ":zero": {"N": "0"},
                    ":limit": {"N": str(limit)},
                    ":ttl": {"N": str(int(time.time() + self._ttl_s))},
                },
            )
            return True
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def refund_budget(self, day: str, amount_usd: float) -> None:
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"budget#{day}"}},
            UpdateExpression="ADD spent_usd :a",
            ExpressionAttributeValues={":a": {"N": str(Decimal(str(-round(amount_usd, 2))))}},
        )
