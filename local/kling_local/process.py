"""Process-wide state the local pipeline has to change, each change undone exactly on close."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

Undo = Callable[[], None]


class ScopedEnvironment:
    """Sets `os.environ` variables for the pipeline's lifetime and restores them exactly.

    The environment is the one seam the handlers, boto3 and moto share with a real Lambda: the
    domain package reads its settings from `os.environ` (one settings module, as in a
    deployment), boto3 reads region, credentials and endpoint from it, and moto's Step Functions
    interpreter reads `MOTO_PORT` from it. Handlers run in this process, so setting it here is
    the only way to configure them without a second code path; `restore` puts back every
    variable as it was, absent ones included.
    """

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            # The first value seen is the one to restore, whatever the pipeline set in between.
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


def ignore_warning(message: str) -> Undo:
    """Ignores one warning message until the returned undo runs."""
    warnings.filterwarnings("ignore", message=message)
    # The module's own list (typeshed calls it a Sequence); filterwarnings put ours first.
    filters = cast("list[Any]", warnings.filters)
    entry = filters[0]

    def undo() -> None:
        if entry in filters:
            filters.remove(entry)

    return undo


def quiet_logger(name: str, level: int = logging.ERROR) -> Undo:
    """Raises one logger's level until the returned undo runs."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    return lambda: logger.setLevel(previous)
