"""The workflow's "Wait for webhook" step: park the task token where the webhook will find it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import PermanentError
from ..observability import logger


class Store(Protocol):
    def wait(self, prediction_id: str, token: str) -> bool: ...


class Waker(Protocol):
    def wake(self, token: str) -> bool: ...


@dataclass(frozen=True)
class WaitRequest:
    """What the state machine passes (`Payload` of the `.waitForTaskToken` task)."""

    prediction_id: str
    token: str

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> WaitRequest:
        prediction_id, token = event.get("prediction_id"), event.get("token")
        if not (isinstance(prediction_id, str) and prediction_id):
            raise PermanentError("the wait step needs a prediction_id", code="bad_wait_request")
        if not (isinstance(token, str) and token):
            raise PermanentError("the wait step needs a task token", code="bad_wait_request")
        return cls(prediction_id, token)


def wait_for_webhook(request: WaitRequest, store: Store, waker: Waker) -> None:
    """Registers the token; when the webhook came first (the race), wakes the step at once.
    Raises TransientError when the token could not be stored (the state machine retries)."""
    if store.wait(request.prediction_id, request.token):
        logger.info("webhook came before the wait", extra={"prediction_id": request.prediction_id})
        waker.wake(request.token)
