"""Submit function: an SQS batch of job messages and prompt-file uploads becomes paid tasks."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from kling_pipeline.observability import logger, metrics, tracer
from kling_pipeline.wiring import submit_service


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return async_process_partial_response(
        event=event,
        record_handler=submit_service().record_handler(),
        # A processor holds one batch's state: one per invocation, so invocations that share
        # a process (the local runner's concurrent pollers) never mix their batches. Every
        # record's outcome is reported, even when all fail, so SQS retries only those records.
        processor=AsyncBatchProcessor(
            event_type=EventType.SQS, raise_on_entire_batch_failure=False
        ),
        context=context,
    )
