"""The pacing ports over AWS: the shared start schedule in the jobs table, the SQS re-send."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from ..conditional import conditional
from ..errors import TransientError
from ..settings import Settings
from .pacing import UNPACED, Pacer, PacingWait, Reservation, StartPacer, StartRate

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

#: The schedule's one item: `next_ms`, the earliest epoch millisecond of the next free start.
SCHEDULE_KEY = {"pk": {"S": "pace#starts"}}
#: A kept turn lives a day at most (a job comes back within 15 minutes).
HOLD_TTL_S = 86400


def _held_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"pace#job#{job_id}"}}


class TableStartSchedule:
    """Evenly spaced starts, one atomic update per start (see `pacing` for why)."""

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def reserve(self, now_ms: int, spacing_ms: int, horizon_ms: int) -> Reservation:
        # Two conditional forms, because an update expression cannot take max(next, now):
        # an idle schedule restarts at `now`, a busy one moves on by one spacing. Losing
        # both conditions means the other form's condition became true in between: go again.
        # Under load the schedule is busy, so the advancing form is tried first.
        for _ in range(5):
            taken = self._advance(now_ms, spacing_ms, horizon_ms)
            if taken is not None:
                return Reservation(taken, taken=True)
            if self._restart(now_ms, spacing_ms):
                return Reservation(now_ms, taken=True)
            first_free = self._next_ms()
            if first_free is not None and first_free > now_ms + horizon_ms:
                return Reservation(first_free, taken=False)
        raise PacingWait("the start schedule kept changing under this job", delay_s=1)

    def _restart(self, now_ms: int, spacing_ms: int) -> bool:
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET next_ms = :after",
            ConditionExpression="attribute_not_exists(next_ms) OR next_ms <= :now",
            ExpressionAttributeValues={
                ":now": {"N": str(now_ms)},
                ":after": {"N": str(now_ms + spacing_ms)},
            },
        )
        return answer is not None

    def _advance(self, now_ms: int, spacing_ms: int, horizon_ms: int) -> int | None:
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET next_ms = next_ms + :spacing",
            ConditionExpression="next_ms > :now AND next_ms <= :limit",
            ExpressionAttributeValues={
                ":now": {"N": str(now_ms)},
                ":limit": {"N": str(now_ms + horizon_ms)},
                ":spacing": {"N": str(spacing_ms)},
            },
            ReturnValues="UPDATED_NEW",
        )
        if answer is None:
            return None
        return int(answer["Attributes"]["next_ms"]["N"]) - spacing_ms

    def _next_ms(self) -> int | None:
        item = self._db.get_item(TableName=self._table, Key=SCHEDULE_KEY, ConsistentRead=True).get(
            "Item"
        )
        return int(item["next_ms"]["N"]) if item and "next_ms" in item else None

    def give_back(self, at_ms: int, spacing_ms: int) -> bool:
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET next_ms = :at",
            ConditionExpression="next_ms = :after",
            ExpressionAttributeValues={
                ":at": {"N": str(at_ms)},
                ":after": {"N": str(at_ms + spacing_ms)},
            },
        )
        # None: a later start was promised since, so that slot stays unused.
        return answer is not None

    def held(self, job_id: str) -> int | None:
        item = self._db.get_item(
            TableName=self._table, Key=_held_key(job_id), ConsistentRead=True
        ).get("Item")
        return int(item["at_ms"]["N"]) if item and "at_ms" in item else None

    def hold(self, job_id: str, at_ms: int) -> None:
        self._db.put_item(
            TableName=self._table,
            Item={
                **_held_key(job_id),
                "at_ms": {"N": str(at_ms)},
                "expires_at": {"N": str(int(time.time()) + HOLD_TTL_S)},
            },
        )

    def drop(self, job_id: str) -> None:
        self._db.delete_item(TableName=self._table, Key=_held_key(job_id))


def message_attributes(record: SQSRecord) -> dict[str, MessageAttributeValueTypeDef]:
    """A received message's own attributes, in the form SendMessage takes them back."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in record.raw_event.get("messageAttributes", {}).items():
        data_type = value.get("dataType", "String")
        if value.get("binaryValue") is not None:
            binary = base64.b64decode(value["binaryValue"])
            attributes[name] = {"DataType": data_type, "BinaryValue": binary}
        elif value.get("stringValue") is not None:
            attributes[name] = {"DataType": data_type, "StringValue": value["stringValue"]}
    return attributes


class SqsResend:
    """Puts a received message back on the job queue as it came, after a delay."""

    def __init__(self, sqs: SQSClient, job_queue_url: str) -> None:
        self._sqs = sqs
        self._jobs = job_queue_url

    def resend(self, body: str, attributes: Mapping[str, Any], delay_s: int) -> None:
        try:
            self._sqs.send_message(
                QueueUrl=self._jobs,
                MessageBody=body,
                MessageAttributes=cast("dict[str, MessageAttributeValueTypeDef]", dict(attributes)),
                DelaySeconds=max(0, min(900, delay_s)),
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(
                f"could not re-queue the job: {exc}", code="requeue_failed"
            ) from None


def start_pacer(settings: Settings, dynamodb: DynamoDBClient) -> Pacer:
    """The pacer the settings ask for: the shared schedule, or none without a rate cap."""
    if settings.videos_per_minute <= 0:
        return UNPACED
    rate = StartRate(
        videos_per_minute=settings.videos_per_minute,
        window_s=settings.rate_window_s,
        margin_s=settings.rate_margin_s,
        max_wait_s=settings.pace_max_wait_s,
    )
    return StartPacer(rate, TableStartSchedule(dynamodb, settings.jobs_table))
