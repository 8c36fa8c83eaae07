"""Every notification this tier's pipelines publish is held to the public notification schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.schemas import check_published_notifications


@pytest.fixture(autouse=True)
def published_notifications() -> Iterator[list[dict[str, Any]]]:
    """The notifications published during the test, each checked against the schema."""
    yield from check_published_notifications()
