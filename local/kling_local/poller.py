"""The Lambda SQS poller, emulated: batches, partial batch failures, visibility and redrive."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .lambdas import FunctionHost
from .provision import REGION, EventSourceMapping

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsPoller:
    """Receives a batch per event source, invokes its function, deletes what succeeded.

    What fails stays on the queue: it reappears after the queue's visibility timeout, and SQS
    itself moves it to the dead-letter queue after the redrive policy's maxReceiveCount, exactly
    as with a deployed event source mapping.
    """

    def __init__(self, mappings: list[EventSourceMapping], host: FunctionHost) -> None:
        self.mappings = mappings
        self.host = host

    def poll_once(self, sqs: SQSClient) -> int:
        """One round over every event source; returns the records handled."""
        handled = 0
        for mapping in self.mappings:
            messages = sqs.receive_message(
                QueueUrl=mapping["queue_url"],
                MaxNumberOfMessages=mapping["batch_size"],
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                continue
            handled += len(messages)
            failed = self._invoke(mapping, messages)
            for message in messages:
                if message["MessageId"] not in failed:
                    self._delete(sqs, mapping["queue_url"], message["ReceiptHandle"])
        return handled

    @staticmethod
    def _delete(sqs: SQSClient, queue_url: str, receipt_handle: str) -> None:
        """Deletes a handled message. With several pollers, moto can hand one message to two
        receivers; the older receipt handle is then invalid, as a real SQS receipt handle is
        after its message was received again. Lambda ignores that too: the message comes back
        and the submit path treats it as the duplicate delivery it is."""
        try:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ReceiptHandleIsInvalid":
                raise

    def _invoke(self, mapping: EventSourceMapping, messages: list[Any]) -> set[str]:
        """The message ids the function failed: all of them when it raised."""
        event = {"Records": [sqs_record(m, mapping["queue_arn"]) for m in messages]}
        payload, errored, _ = self.host.invoke(mapping["function"], event)
        if errored:
            return {m["MessageId"] for m in messages}
        if not mapping["partial"]:
            return set()
        answer = json.loads(payload) or {}
        return {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}

    def busy(self, sqs: SQSClient) -> bool:
        """Whether any event source queue holds a message, visible, in flight or delayed (a
        job re-queued to wait for its start)."""
        for mapping in self.mappings:
            attributes = sqs.get_queue_attributes(
                QueueUrl=mapping["queue_url"],
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(count or 0) for count in attributes.values()):
                return True
        return False


def sqs_record(message: Any, queue_arn: str) -> dict[str, Any]:
    """A received SQS message in the shape Lambda hands it to the function."""
    attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "dataType": value.get("DataType", "String"),
            "stringListValues": [],
            "binaryListValues": [],
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


@contextmanager
def concurrent_pollers(poll_once: Callable[[], int], count: int) -> Iterator[None]:
    """`count` more emulated Lambda pollers, each calling `poll_once` until the block ends:
    concurrent functions taking batches from the same queues."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                handled = poll_once()
            except ClientError:
                # moto may hand one message to two concurrent receivers; the second delete is
                # refused. SQS is at-least-once too: the pipeline treats it as a duplicate.
                handled = 0
            if not handled:
                stop.wait(0.05)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
