"""Webhook function: WaveSpeed's webhooks (function URL) and the workflow's "Wait for webhook"."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kling_pipeline.observability import logger, metrics, tracer
from kling_pipeline.webhook.receive import WebhookRequest
from kling_pipeline.webhook.wait import WaitRequest, wait_for_webhook
from kling_pipeline.wiring import task_waker, webhook_receiver, webhook_store


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | None:
    if "requestContext" in event:  # an HTTP request through the function URL
        request = WebhookRequest.from_function_url(event)
        return webhook_receiver().receive(request).to_function_url()
    # The state machine's task, invoked with its task token.
    wait_for_webhook(WaitRequest.from_event(event), webhook_store(), task_waker())
    return None
