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

#: The schedule's one item: `next_us`, the earliest epoch microsecond of the next free start.
SCHEDULE_KEY = {"pk": {"S": "pace#starts"}}
#: The attribute every form of the schedule's update works on (the soak counts turns by it).
NEXT_START = "next_us"
#: What deployments that counted in milliseconds kept on the same item: read once, on upgrade.
LEGACY_NEXT_START = "next_ms"
#: A kept turn lives a day at most (a job comes back within 15 minutes).
HOLD_TTL_S = 86400


def _held_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"pace#job#{job_id}"}}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


class TableStartSchedule:
    """Evenly spaced starts, one atomic update per start (see `pacing` for why).

    Upgrading from a deployment that kept the schedule in milliseconds (`next_ms`): the new
    attribute has its own name, so a millisecond figure is never read as microseconds. While
    `next_us` does not exist yet, the old `next_ms` is still honoured as a floor (the schedule
    starts no earlier than the starts the old code already promised, which functions still
    running it may be sleeping for) and is removed when `next_us` is first written. A held turn
    of the old form (`at_ms`) is not read: that job simply takes a new turn.
    """

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def reserve(self, now_us: int, spacing_us: int, horizon_us: int) -> Reservation:
        # Two conditional forms, because an update expression cannot take max(next, now):
        # an idle schedule restarts at `now`, a busy one moves on by one spacing. Losing
        # both conditions means the other form's condition became true in between: go again.
        # Under load the schedule is busy, so the advancing form is tried first.
        for _ in range(5):
            taken = self._advance(now_us, spacing_us, horizon_us)
            if taken is not None:
                return Reservation(taken, taken=True)
            if self._restart(now_us, spacing_us):
                return Reservation(now_us, taken=True)
            first_free, legacy_ms = self._next_start()
            if first_free is None and legacy_ms is not None:
                # Only just upgraded, and the old schedule is still busy: carry on from it.
                first_free = legacy_ms * 1000
                if first_free <= now_us + horizon_us and self._adopt(legacy_ms, spacing_us):
                    return Reservation(first_free, taken=True)
            if first_free is not None and first_free > now_us + horizon_us:
                return Reservation(first_free, taken=False)
        raise PacingWait("the start schedule kept changing under this job", delay_s=1)

    def _restart(self, now_us: int, spacing_us: int) -> bool:
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET #next = :after REMOVE #legacy",
            ConditionExpression=(
                "#next <= :now OR (attribute_not_exists(#next)"
                " AND (attribute_not_exists(#legacy) OR #legacy <= :now_ms))"
            ),
            ExpressionAttributeNames={"#next": NEXT_START, "#legacy": LEGACY_NEXT_START},
            ExpressionAttributeValues={
                ":now": _n(now_us),
                ":now_ms": _n(now_us // 1000),
                ":after": _n(now_us + spacing_us),
            },
        )
        return answer is not None

    def _adopt(self, legacy_ms: int, spacing_us: int) -> bool:
        """The first start after an upgrade, at the old schedule's first free one."""
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET #next = :after REMOVE #legacy",
            ConditionExpression="attribute_not_exists(#next) AND #legacy = :legacy",
            ExpressionAttributeNames={"#next": NEXT_START, "#legacy": LEGACY_NEXT_START},
            ExpressionAttributeValues={
                ":legacy": _n(legacy_ms),
                ":after": _n(legacy_ms * 1000 + spacing_us),
            },
        )
        return answer is not None

    def _advance(self, now_us: int, spacing_us: int, horizon_us: int) -> int | None:
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET #next = #next + :spacing",
            ConditionExpression="#next > :now AND #next <= :limit",
            ExpressionAttributeNames={"#next": NEXT_START},
            ExpressionAttributeValues={
                ":now": _n(now_us),
                ":limit": _n(now_us + horizon_us),
                ":spacing": _n(spacing_us),
            },
            ReturnValues="UPDATED_NEW",
        )
        if answer is None:
            return None
        return int(answer["Attributes"][NEXT_START]["N"]) - spacing_us

    def _next_start(self) -> tuple[int | None, int | None]:
        """The item as it stands: (`next_us`, the old deployment's `next_ms`)."""
        item = self._db.get_item(TableName=self._table, Key=SCHEDULE_KEY, ConsistentRead=True).get(
            "Item", {}
        )
        current, legacy = item.get(NEXT_START), item.get(LEGACY_NEXT_START)
        return (
            int(current["N"]) if current else None,
            int(legacy["N"]) if legacy else None,
        )

    def give_back(self, at_us: int, spacing_us: int) -> bool:
        answer = conditional(
            self._db.update_item,
            TableName=self._table,
            Key=SCHEDULE_KEY,
            UpdateExpression="SET #next = :at",
            ConditionExpression="#next = :after",
            ExpressionAttributeNames={"#next": NEXT_START},
            ExpressionAttributeValues={":at": _n(at_us), ":after": _n(at_us + spacing_us)},
        )
        # None: a later start was promised since, so that slot stays unused.
        return answer is not None

    def held(self, job_id: str) -> int | None:
        item = self._db.get_item(
            TableName=self._table, Key=_held_key(job_id), ConsistentRead=True
        ).get("Item")
        return int(item["at_us"]["N"]) if item and "at_us" in item else None

    def hold(self, job_id: str, at_us: int) -> None:
        self._db.put_item(
            TableName=self._table,
            Item={
                **_held_key(job_id),
                "at_us": _n(at_us),
                "expires_at": _n(int(time.time()) + HOLD_TTL_S),
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
