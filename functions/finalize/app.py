"""Finalize function: store the videos and notify success, or notify the failure."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kling_pipeline.job.workflow import WorkflowState
from kling_pipeline.observability import logger, metrics, tracer
from kling_pipeline.wiring import finalizer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = WorkflowState.from_dict(event)
    action = event.get("action")
    logger.append_keys(job_id=state.job.job_id, action=action)
    if action == "store":
        return finalizer().store_video(state).to_dict()
    return finalizer().notify_failure(state)
