"""Poll function: one status check of a prediction; returns the workflow's next step."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kling_pipeline.clients import wavespeed
from kling_pipeline.job.workflow import WorkflowState
from kling_pipeline.observability import logger, metrics, tracer
from kling_pipeline.poll import poll_prediction


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = WorkflowState.from_dict(event)
    logger.append_keys(job_id=state.job.job_id, prediction_id=state.prediction_id)
    return poll_prediction(state, wavespeed()).to_dict()
