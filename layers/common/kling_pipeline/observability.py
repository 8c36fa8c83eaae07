"""Powertools logger, metrics and tracer shared by every handler (one instance per container)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord

from .redact import redact_tree
from .settings import load_settings

NAMESPACE = "KlingPipeline"
F = TypeVar("F", bound=Callable[..., Any])


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON log lines with every registered secret and credential shape masked:
    error text from the API or a proxy can carry the key, and logs leave the process."""

    def serialize(self, log: LogRecord) -> str:
        return super().serialize(cast(LogRecord, redact_tree(dict(log))))


# The service name comes from POWERTOOLS_SERVICE_NAME, which template.yaml sets to the stack name:
# two stacks in one account (dev, prod) then log and count under separate names, and the
# dashboard of each reads only its own figures.
logger = Logger(logger_formatter=RedactingFormatter())
metrics = Metrics(namespace=NAMESPACE)


class TracerLike(Protocol):
    """The part of Powertools Tracer the handlers use."""

    def capture_lambda_handler(self, handler: F) -> F: ...

    def capture_method(self, method: F) -> F: ...


class _NoTracer:
    """Stands in for Powertools Tracer when tracing is off.

    Even a disabled Tracer imports the X-Ray SDK and builds its recorder (~0.3 s of cold start),
    so the SDK is only loaded when the stack is deployed with EnableTracing=true.
    """

    def capture_lambda_handler(self, handler: F) -> F:
        return handler

    def capture_method(self, method: F) -> F:
        return method


def _make_tracer() -> TracerLike:
    if not load_settings().tracing_enabled:
        return _NoTracer()
    from aws_lambda_powertools import Tracer

    return cast(TracerLike, Tracer())


tracer = _make_tracer()
