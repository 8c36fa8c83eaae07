"""Ambiguous submits reconciled with WaveSpeed's prediction history, never by a second POST.

A submit whose answer never came (timeout, dropped connection, 5xx) may have created a paid
task. WaveSpeed lists recent predictions by model and creation window; the history may not
carry a task's input, so a task is taken as this job's only when it is the single candidate:
of this model, created in the window around the send, not already the prediction of another
job id, and (when the history shows the input) with this job's prompt. Anything else —
several candidates, none after the settling period, a history that cannot be read — is not
guessed at: the job ends `submit_outcome_unknown` with that evidence in its message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from .. import MODEL_ID
from ..conditional import condition_failed
from ..errors import PermanentError, TransientError
from ..observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

#: Waits before each look at the history: a task shows up there a moment after it is created.
SETTLE_WAITS_S = (0.0, 2.0, 4.0, 8.0, 16.0)
#: Slack on each side of the send window, for the clocks of two machines.
CLOCK_MARGIN_S = 10.0
#: How long a reconciled claim is kept (as long as job records).
CLAIM_TTL_S = 90 * 86400


class History(Protocol):
    """WaveSpeed's prediction history (`wavespeed.WaveSpeedClient.recent_predictions`)."""

    def recent_predictions(
        self, *, model: str, created_after: str, created_before: str, max_pages: int = 5
    ) -> list[dict[str, Any]]: ...


class PredictionOwners(Protocol):
    """Which job id a prediction belongs to, and a claim of one for a reconciled job."""

    def owner(self, prediction_id: str) -> str | None: ...

    def claim(self, prediction_id: str, job_id: str) -> bool: ...


@dataclass(frozen=True)
class Reconciled:
    """The prediction the lost answer would have named, or why none could be named."""

    prediction_id: str | None
    evidence: str


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


class Reconciler:
    """Looks an ambiguous submit up in the history until it settles."""

    def __init__(
        self,
        history: History,
        owners: PredictionOwners,
        *,
        waits_s: Sequence[float] = SETTLE_WAITS_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._history = history
        self._owners = owners
        self._waits = tuple(waits_s) or (0.0,)
        self._sleep = sleep
        self._clock = clock

    def find(self, job_id: str, prompt: str, sent_at: float, returned_at: float) -> Reconciled:
        """The job's task if the history shows exactly one that can be it.

        The window runs from the send to when the submit call gave up (a task created later
        is not this one), with clock slack on both sides. A single candidate is taken only
        once two looks in a row agree on it (a concurrent submit's task may still appear),
        or on the last look.
        """
        after = _iso(sent_at - CLOCK_MARGIN_S)
        before = _iso(returned_at + CLOCK_MARGIN_S)
        previous: list[str] | None = None
        for look, wait in enumerate(self._waits, start=1):
            self._sleep(wait)
            try:
                items = self._history.recent_predictions(
                    model=MODEL_ID, created_after=after, created_before=before
                )
            except (TransientError, PermanentError) as exc:
                return Reconciled(None, f"the prediction history could not be read ({exc.code})")
            seen = [str(i["id"]) for i in items if self._could_be(i, job_id, prompt)]
            if len(seen) > 1:
                metrics.add_metric(name="SubmitsAmbiguous", unit="Count", value=1)
                return Reconciled(
                    None,
                    f"the history shows {len(seen)} unclaimed {MODEL_ID} tasks created between "
                    f"{after} and {before} ({', '.join(seen)}): which one is this job's "
                    "cannot be told",
                )
            settled = seen == previous or look == len(self._waits)
            if seen and settled and self._owners.claim(seen[0], job_id):
                logger.info("ambiguous submit reconciled", extra={"prediction_id": seen[0]})
                metrics.add_metric(name="SubmitsReconciled", unit="Count", value=1)
                return Reconciled(seen[0], f"found in the history as {seen[0]}")
            previous = seen
        return Reconciled(
            None,
            f"no unclaimed {MODEL_ID} task created between {after} and {before} appeared in "
            f"the prediction history within {sum(self._waits):.0f} s",
        )

    def _could_be(self, item: dict[str, Any], job_id: str, prompt: str) -> bool:
        prediction_id = item.get("id")
        if not isinstance(prediction_id, str) or item.get("model", MODEL_ID) != MODEL_ID:
            return False
        shown = item.get("input")
        if isinstance(shown, dict) and "prompt" in shown and shown["prompt"] != prompt:
            return False
        owner = self._owners.owner(prediction_id)
        return owner is None or owner == job_id


class TablePredictionOwners:
    """Prediction owners in the jobs table: a job's `prediction_id`, or a reconciled claim
    (`pk = prediction#<id>`), which makes two reconciling jobs unable to take one task."""

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def owner(self, prediction_id: str) -> str | None:
        claimed = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": f"prediction#{prediction_id}"}}
        ).get("Item")
        if claimed:
            return str(claimed["job_id"]["S"])
        # Reconciling is rare (only ambiguous submits), so a filtered scan is affordable here.
        pages = self._db.get_paginator("scan").paginate(
            TableName=self._table,
            FilterExpression="prediction_id = :p",
            ExpressionAttributeValues={":p": {"S": prediction_id}},
            ProjectionExpression="pk",
        )
        for page in pages:
            for item in page.get("Items", []):
                return str(item["pk"]["S"]).removeprefix("job#")
        return None

    def claim(self, prediction_id: str, job_id: str) -> bool:
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"prediction#{prediction_id}"},
                    "job_id": {"S": job_id},
                    "expires_at": {"N": str(int(time.time() + CLAIM_TTL_S))},
                },
                ConditionExpression="attribute_not_exists(pk) OR job_id = :j",
                ExpressionAttributeValues={":j": {"S": job_id}},
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
