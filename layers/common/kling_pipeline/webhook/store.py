"""Webhook bookkeeping in the jobs table, in items of their own next to the job items.

`pred#<prediction id>`: created when the prediction is submitted with a webhook; holds the task
token of the workflow step waiting for it (`token`) and the time a finished-prediction webhook
arrived (`arrived`). Whichever of the two writes comes second sees the first (each update
returns the item as it was), so a webhook that beats the workflow to its wait is never lost.
`hook#<webhook-id>`: a webhook already handled, so WaveSpeed's resends have no effect.
Both expire through the table's TTL attribute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ..conditional import condition_failed
from ..errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

#: How long bookkeeping items live: a generation plus the poll deadline, with room to spare.
PREDICTION_TTL_S = 2 * 86400
#: WaveSpeed resends within minutes; a day of remembered ids covers any retry schedule.
HOOK_TTL_S = 86400


class UnknownPrediction(Exception):
    """No job of this pipeline waits for this prediction."""


def prediction_key(prediction_id: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"pred#{prediction_id}"}}


def hook_key(webhook_id: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"hook#{webhook_id}"}}


class WebhookStore:
    """The three facts the fast path needs: expected, waiting (token), arrived."""

    def __init__(
        self, dynamodb: DynamoDBClient, table: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def _expiry(self, seconds: int) -> dict[str, str]:
        return {"N": str(int(self._clock()) + seconds)}

    def expect(self, prediction_id: str) -> None:
        """Records that `prediction_id` was submitted with a webhook."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=prediction_key(prediction_id),
                UpdateExpression="SET expires_at = :ttl",
                ExpressionAttributeValues={":ttl": self._expiry(PREDICTION_TTL_S)},
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"could not record the prediction: {type(exc).__name__}") from None

    def wait(self, prediction_id: str, token: str) -> bool:
        """Stores the waiting step's token; True when a webhook already arrived (consumed here,
        so one early webhook wakes one wait, never every later one)."""
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key=prediction_key(prediction_id),
                UpdateExpression="SET #token = :token, expires_at = :ttl REMOVE arrived",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues={
                    ":token": {"S": token},
                    ":ttl": self._expiry(PREDICTION_TTL_S),
                },
                ReturnValues="ALL_OLD",
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"could not store the task token: {type(exc).__name__}") from None
        return "arrived" in answer.get("Attributes", {})

    def arrived(self, prediction_id: str) -> str | None:
        """Marks that the prediction finished; returns the token of a waiting step, if any.
        Raises UnknownPrediction when this pipeline never submitted it."""
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key=prediction_key(prediction_id),
                UpdateExpression="SET arrived = :now",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":now": {"N": str(int(self._clock()))}},
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if condition_failed(exc):
                raise UnknownPrediction(prediction_id) from None
            raise TransientError(f"could not mark the webhook: {type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise TransientError(f"could not mark the webhook: {type(exc).__name__}") from None
        token = answer.get("Attributes", {}).get("token", {}).get("S")
        return token or None

    def expected(self, prediction_id: str) -> bool:
        """Whether this pipeline submitted `prediction_id` with a webhook."""
        return self._exists(prediction_key(prediction_id))

    def seen(self, webhook_id: str) -> bool:
        """Whether this webhook id was handled before."""
        return self._exists(hook_key(webhook_id))

    def _exists(self, key: dict[str, dict[str, str]]) -> bool:
        try:
            item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"could not read the jobs table: {type(exc).__name__}") from None
        return "Item" in item

    def remember(self, webhook_id: str) -> None:
        """Records a handled webhook id (after its effect, so a failure is retried, not lost)."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item={**hook_key(webhook_id), "expires_at": self._expiry(HOOK_TTL_S)},
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"could not record the webhook id: {type(exc).__name__}") from None
