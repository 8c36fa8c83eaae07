"""DynamoDB conditional writes: the one way the pipeline tells "the condition did not hold"
(an expected outcome: another delivery won, the slot moved on) from a real failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")


def condition_failed(exc: ClientError) -> bool:
    """True when DynamoDB refused a write because its ConditionExpression did not hold."""
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def conditional(write: Callable[..., T], **request: Any) -> T | None:
    """Runs one conditional write (`put_item`, `update_item`, `delete_item`); its answer, or
    None when its condition did not hold. Every other error is raised."""
    try:
        return write(**request)
    except ClientError as exc:
        if condition_failed(exc):
            return None
        raise
