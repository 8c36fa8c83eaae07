"""Finalize function: store the videos and notify success, or notify the failure."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kling_pipeline.delivery import DeliveryService
from kling_pipeline.observability import logger, metrics, tracer
from kling_pipeline.wiring import delivery_service


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(job_id=event["job"]["job_id"], action=event.get("action"))
    service: DeliveryService = delivery_service()
    if event.get("action") == "store":
        return service.store_video(event)
    return service.notify_failure(event)
