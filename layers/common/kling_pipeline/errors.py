"""The two error roots the pipeline acts on: permanent (never retried) and transient (retried)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from .types import Json

#: Code of a Task that crashed or timed out without saying why in the pipeline's own terms.
TASK_CRASHED = "task_failed"
TASK_TIMEOUT = "task_timeout"


@dataclass(frozen=True)
class ErrorDetail:
    """Why a job failed, as notifications, the jobs table and the workflow state carry it."""

    code: str
    message: str
    #: The job message field a validation error names.
    field: str | None = None

    def to_json(self) -> Json:
        body: Json = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    @classmethod
    def from_json(cls, value: Any) -> ErrorDetail | None:
        if not isinstance(value, dict) or not value.get("code"):
            return None
        field = value.get("field")
        return cls(
            code=str(value["code"]),
            message=str(value.get("message") or ""),
            field=str(field) if field is not None else None,
        )

    @classmethod
    def from_caught(cls, caught: Json) -> ErrorDetail:
        """What a Step Functions `Catch` recorded (`Error`, `Cause`) as a user-facing error.

        Tasks return their permanent failures as data, so a caught error is a crash, a timeout
        or a TransientError that outlived its retries; only the last names its own code, in
        the JSON message it renders (see `PipelineError.__str__`).
        """
        name = str(caught.get("Error") or "")
        cause = str(caught.get("Cause") or "")
        if name == "States.Timeout":
            return cls(TASK_TIMEOUT, cause[:2000] or "the task timed out")
        message = cause
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            message = str(json.loads(cause).get("errorMessage") or cause)
        try:
            rendered = cls.from_json(json.loads(message))
        except json.JSONDecodeError:
            rendered = None
        if rendered is not None:
            return cls(rendered.code, rendered.message[:2000])
        return cls(TASK_CRASHED, f"{name}: {message}"[:2000] if name else message[:2000])


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose; `code` is what users see."""

    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def __str__(self) -> str:
        # Lambda hands Step Functions only the class name and str(error): rendering the code
        # and message as JSON lets the failure step decode them instead of parsing prose.
        return json.dumps({"code": self.code, "message": self.message})

    def detail(self) -> ErrorDetail:
        return ErrorDetail(self.code, self.message)


class PermanentError(PipelineError):
    """Retrying cannot help: bad input, content refused, an ambiguous paid submission."""

    default_code = "permanent_error"


class TransientError(PipelineError):
    """Throttling, 5xx, network trouble: retried with backoff.

    Step Functions matches errors by the exception's class name, so code that runs inside a
    state machine Task raises this class itself (with a `code`) rather than a subclass.
    """

    default_code = "transient_error"


class ValidationError(PermanentError):
    """A job message or prompt file line breaks a rule of the job contract."""

    default_code = "invalid_job"

    def __init__(self, field: str, rule: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {field}: {rule}" if where else f"{field}: {rule}")
        self.field = field
        self.rule = rule

    def detail(self) -> ErrorDetail:
        return ErrorDetail(self.code, self.message, self.field)


class SubmitOutcomeUnknown(PermanentError):
    """The submit POST was sent but no answer came back: a paid task may exist."""

    default_code = "submit_outcome_unknown"


class BudgetExceeded(PermanentError):
    """The daily budget cap would be exceeded by this job."""

    default_code = "budget_exceeded"
