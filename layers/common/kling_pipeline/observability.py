"""Powertools logger and metrics shared by every handler (one instance per container)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "kling-pipeline"
NAMESPACE = "KlingPipeline"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
