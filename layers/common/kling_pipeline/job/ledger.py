"""Job records in DynamoDB: the conditional writes that make one job id cost at most one task.

Why not Powertools Idempotency here: it deletes its record when the wrapped call raises and
re-runs the call once an in-progress record expires. Both would re-send a paid POST whose first
attempt may have created a task, so the submit path keeps its own small state machine:

    (absent) --claim--> submitting --record_prediction--> submitted --mark_started--> running
                           |  lease expired while submitting: outcome unknown, never re-POSTed
                           '--release (provably not accepted: 429, refused, budget)--> (absent)

Terminal notifications are claimed separately (`claim_terminal`, which stores the outcome and
its error) so each job publishes one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..conditional import condition_failed, conditional
from ..errors import ErrorDetail
from ..types import Json
from .record import REDRIVE_FROM_SCRATCH, JobRecord, Stage, encode, job_key
from .workflow import WorkflowState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

#: How long a terminal claim's holder has to publish before another attempt may take over.
TERMINAL_LEASE_S = 120


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class _JobItems:
    """Writes to one job's item (`pk = job#<id>`) that tell a failed condition apart."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, *, ttl_days: int) -> None:
        self._db = dynamodb
        self._table = table
        self._ttl_s = ttl_days * 86400

    def _update(self, job_id: str, **request: Any) -> bool:
        """One (conditional) update of the job's item; False when its condition did not hold."""
        return self._conditional(self._db.update_item, job_id, request)

    def _conditional(self, write: Callable[..., object], job_id: str, request: Json) -> bool:
        answer = conditional(write, TableName=self._table, Key=job_key(job_id), **request)
        return answer is not None


class _Claims(_JobItems):
    """Who owns a job id: the claim for payment, a rejection's claim, their release."""

    def get(self, job_id: str) -> JobRecord | None:
        item = self._db.get_item(
            TableName=self._table, Key=job_key(job_id), ConsistentRead=True
        ).get("Item")
        return JobRecord.from_item(dict(item)) if item else None

    def claim_submission(
        self, job_id: str, *, lease_s: int, job: Json, source: Json, fingerprint: str = ""
    ) -> JobRecord | None:
        """Takes the job for submission; returns None when won, else the existing record.

        A job id whose only outcome was a notified `rejected` (nothing claimed, nothing paid)
        is taken over: the corrected message runs under it.
        """
        now = time.time()
        claim = JobRecord(
            job_id=job_id,
            stage=Stage.SUBMITTING,
            lease_until=int(now + lease_s),
            job_input=job,
            source=source,
            created_at=_now_iso(),
            fingerprint=fingerprint or None,
        )
        if self._put_unless_owned(claim, now):
            return None
        existing = self.get(job_id)
        if existing is None:  # released between our write and read: try once more
            return self.claim_submission(
                job_id, lease_s=lease_s, job=job, source=source, fingerprint=fingerprint
            )
        return existing

    def claim_rejection(self, job_id: str, fingerprint: str) -> JobRecord | None:
        """Takes a never-claimed job id for a rejection of the request `fingerprint`.

        None when taken (the id was free, or only an earlier rejection of a different request
        held it); else the record that owns the id, untouched.
        """
        now = time.time()
        claim = JobRecord(job_id=job_id, fingerprint=fingerprint, created_at=_now_iso())
        if self._put_unless_owned(claim, now, unless_same=fingerprint):
            return None
        existing = self.get(job_id)
        return existing if existing is not None else self.claim_rejection(job_id, fingerprint)

    def _put_unless_owned(self, record: JobRecord, now: float, unless_same: str = "") -> bool:
        """Writes a fresh item for the job unless a claimed or non-rejected job owns its id."""
        condition = (
            "attribute_not_exists(pk) OR (attribute_not_exists(#s) AND terminal_status = :rej "
            "AND attribute_exists(notified_at))"
        )
        values: dict[str, Any] = {":rej": {"S": "rejected"}}
        if unless_same:
            # The same rejected request again is a duplicate delivery, not a new rejection.
            condition = condition[:-1] + " AND NOT fingerprint = :fp)"
            values[":fp"] = {"S": unless_same}
        try:
            self._db.put_item(
                TableName=self._table,
                Item={**record.to_item(), "expires_at": {"N": str(int(now + self._ttl_s))}},
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def note_fingerprint(self, job_id: str, fingerprint: str) -> None:
        """Records which request owns a job id refused without a claim (budget, missing key)."""
        self._update(
            job_id,
            UpdateExpression="SET fingerprint = if_not_exists(fingerprint, :fp), job_id = :j",
            ExpressionAttributeValues={":fp": {"S": fingerprint}, ":j": {"S": job_id}},
        )

    def release(self, job_id: str) -> None:
        """Forgets a claim whose POST provably created nothing, so a redelivery can retry."""
        request = {
            "ConditionExpression": "#s = :submitting",
            "ExpressionAttributeNames": {"#s": "state"},
            "ExpressionAttributeValues": {":submitting": {"S": Stage.SUBMITTING}},
        }
        self._conditional(self._db.delete_item, job_id, request)


class JobLedger(_Claims):
    """Conditional writes on the jobs table, one item per job id (`pk = job#<id>`)."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, *, ttl_days: int = 90) -> None:
        super().__init__(dynamodb, table, ttl_days=ttl_days)
        self._budget = DailyBudget(dynamodb, table, ttl_s=self._ttl_s)

    def record_prediction(self, job_id: str, prediction_id: str, state: WorkflowState) -> None:
        """Stores the paid task's id, and the workflow it starts, before anything else can fail."""
        self._db.update_item(
            TableName=self._table,
            Key=job_key(job_id),
            UpdateExpression="SET #s = :submitted, prediction_id = :p, submitted_at = :t, "
            "execution_input = :x",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":submitted": {"S": Stage.SUBMITTED},
                ":p": {"S": prediction_id},
                ":t": {"S": _now_iso()},
                ":x": {"S": encode(state.to_dict())},
            },
        )

    def mark_started(self, job_id: str, execution_arn: str) -> bool:
        """Records the started workflow; False when the job had already moved past submitted."""
        return self._update(
            job_id,
            UpdateExpression="SET #s = :running, execution_arn = :e",
            ConditionExpression="#s = :submitted",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":running": {"S": Stage.RUNNING},
                ":submitted": {"S": Stage.SUBMITTED},
                ":e": {"S": execution_arn},
            },
        )

    def claim_terminal(
        self,
        job_id: str,
        status: str,
        error: ErrorDetail | None = None,
        *,
        lease_s: int = TERMINAL_LEASE_S,
    ) -> bool:
        """True when this caller must publish the job's terminal notification.

        The first terminal status wins, and its error is stored with it. A claim whose publish
        was never confirmed is taken over only once its lease has run out (its holder crashed):
        two deliveries of one job handled at the same moment must not both publish.
        """
        now = time.time()
        values: dict[str, Any] = {
            ":s": {"S": status},
            ":j": {"S": job_id},
            ":now": {"N": str(int(now))},
            ":until": {"N": str(int(now + lease_s))},
            ":ttl": {"N": str(int(now + self._ttl_s))},
        }
        update = (
            "SET terminal_status = :s, terminal_lease_until = :until, job_id = :j, "
            "expires_at = if_not_exists(expires_at, :ttl)"
        )
        if error is not None:
            update += ", terminal_error = :e"
            values[":e"] = {"S": encode(error.to_json())}
        else:
            update += " REMOVE terminal_error"
        return self._update(
            job_id,
            UpdateExpression=update,
            ConditionExpression="attribute_not_exists(terminal_status) OR "
            "(attribute_not_exists(notified_at) AND (attribute_not_exists("
            "terminal_lease_until) OR terminal_lease_until < :now))",
            ExpressionAttributeValues=values,
        )

    def release_terminal(self, job_id: str, status: str) -> None:
        """Gives up a terminal claim whose publish failed, so any later outcome can be sent."""
        self._update(
            job_id,
            UpdateExpression="REMOVE terminal_status, terminal_lease_until, terminal_error",
            ConditionExpression="terminal_status = :s AND attribute_not_exists(notified_at)",
            ExpressionAttributeValues={":s": {"S": status}},
        )

    def mark_notified(self, job_id: str) -> None:
        """The claimed outcome went out: from now on it is what the job's readers see."""
        self._update(
            job_id,
            UpdateExpression="SET notified_at = :t",
            ExpressionAttributeValues={":t": {"S": _now_iso()}},
        )

    def reopen_failed(self, job_id: str) -> bool:
        """Lets a re-stored job's `completed` outcome replace its published `failed` one."""
        return self._update(
            job_id,
            UpdateExpression="REMOVE terminal_status, terminal_error, terminal_lease_until, "
            "notified_at",
            ConditionExpression="terminal_status = :failed AND attribute_exists(notified_at)",
            ExpressionAttributeValues={":failed": {"S": "failed"}},
        )

    def claim_park(self, job_id: str) -> bool:
        """True for the one delivery of a job that parks it in the DLQ (duplicates race here)."""
        return self._update(
            job_id,
            UpdateExpression="SET parked_at = :t",
            ConditionExpression="attribute_not_exists(parked_at)",
            ExpressionAttributeValues={":t": {"S": _now_iso()}},
        )

    def release_park(self, job_id: str) -> None:
        """The park failed: let the message's next delivery try again."""
        self._update(job_id, UpdateExpression="REMOVE parked_at")

    def mark_redrivable(self, job_id: str, *, resume: Stage | None) -> None:
        """Lets a redrive of the parked message run the job again.

        `resume` None: nothing was paid, the job starts over. `submitted`: a task exists, a
        redrive only starts its workflow with the stored prediction id (never a new POST).
        """
        self._update(
            job_id,
            UpdateExpression="SET redrivable = :r",
            ExpressionAttributeValues={":r": {"S": resume or REDRIVE_FROM_SCRATCH}},
        )

    def reopen(self, job_id: str) -> bool:
        """Undoes a redrivable refusal (a DLQ redrive); other records are left alone."""
        record = self.get(job_id)
        resume = record.redrivable if record else None
        if resume is None:
            return False
        if resume == REDRIVE_FROM_SCRATCH:
            request: Json = {
                "ConditionExpression": "redrivable = :r",
                "ExpressionAttributeValues": {":r": {"S": resume}},
            }
            return self._conditional(self._db.delete_item, job_id, request)
        return self._update(
            job_id,
            UpdateExpression="SET #s = :resume REMOVE terminal_status, terminal_error, "
            "terminal_lease_until, notified_at, parked_at, redrivable",
            ConditionExpression="redrivable = :r",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":r": {"S": resume}, ":resume": {"S": resume}},
        )

    def reserve_budget(self, day: str, amount_usd: float, cap_usd: float) -> bool:
        """Atomically adds `amount_usd` to the day's spend unless that would pass the cap."""
        return self._budget.reserve(day, amount_usd, cap_usd)

    def refund_budget(self, day: str, amount_usd: float) -> None:
        self._budget.refund(day, amount_usd)


class DailyBudget:
    """The day's committed spend (`pk = budget#<day>`), in the jobs table."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, *, ttl_s: int) -> None:
        self._db = dynamodb
        self._table = table
        self._ttl_s = ttl_s

    def reserve(self, day: str, amount_usd: float, cap_usd: float) -> bool:
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
            if condition_failed(exc):
                return False
            raise

    def refund(self, day: str, amount_usd: float) -> None:
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"budget#{day}"}},
            UpdateExpression="ADD spent_usd :a",
            ExpressionAttributeValues={":a": {"N": str(Decimal(str(-round(amount_usd, 2))))}},
        )
