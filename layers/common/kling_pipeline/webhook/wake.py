"""Wakes a workflow step waiting on a task token (`SendTaskSuccess`), quietly when it is gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import TransientError
from ..observability import logger

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

#: The step stopped waiting (timed out, already woken, execution over): nothing left to wake.
GONE = ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist")


class TaskWaker:
    """Sends an empty success: the workflow reads the prediction itself, so nothing a webhook
    says can become the step's output."""

    def __init__(self, sfn: SFNClient) -> None:
        self._sfn = sfn

    def wake(self, token: str) -> bool:
        """True when a waiting step was woken, False when there was none any more."""
        try:
            self._sfn.send_task_success(taskToken=token, output="{}")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in GONE:
                logger.info("no step waits on this token any more", extra={"reason": code})
                return False
            raise TransientError(f"could not wake the workflow: {code}") from None
        except BotoCoreError as exc:
            raise TransientError(f"could not wake the workflow: {type(exc).__name__}") from None
        return True
