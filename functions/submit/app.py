"""Submit function: an SQS batch of job messages and prompt-file uploads becomes paid tasks."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kling_pipeline.observability import logger, metrics, tracer
from kling_pipeline.submission import SubmissionService
from kling_pipeline.wiring import submission_service

# Every record's outcome is reported, even when all fail, so SQS retries only those records.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # Records are submitted concurrently first; Powertools then reports the failed ones.
    service: SubmissionService = submission_service()
    failures = service.process_batch(event["Records"])

    def settle(record: SQSRecord) -> None:
        failure = failures.get(record.message_id)
        if failure is not None:
            raise failure

    return process_partial_response(
        event=event,
        record_handler=settle,
        processor=processor,
        context=context,
    )
