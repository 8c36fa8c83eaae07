"""The two error roots the pipeline acts on: permanent (never retried) and transient (retried)."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose; `code` is what users see."""

    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


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

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class SubmitOutcomeUnknown(PermanentError):
    """The submit POST was sent but no answer came back: a paid task may exist."""

    default_code = "submit_outcome_unknown"


class BudgetExceeded(PermanentError):
    """The daily budget cap would be exceeded by this job."""

    default_code = "budget_exceeded"
