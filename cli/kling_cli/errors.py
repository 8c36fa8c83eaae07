"""The one error the command line reports to the user as a message and an exit status."""

from __future__ import annotations

from . import EXIT_FAILED


class CliError(Exception):
    """Something the user can act on; printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
