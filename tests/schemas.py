"""The public JSON Schemas in schemas/, loaded once for the tests that hold code to them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from kling_local.observe import NOTIFICATION_LISTENERS

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator of schemas/<name>.schema.json, formats checked as well."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def violations(name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the schema, as readable lines (empty when it is valid)."""
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator(name).iter_errors(instance)
    ]


def check_published_notifications() -> Iterator[list[dict[str, Any]]]:
    """Fixture body: checks every notification the local pipeline's tap collects against
    schemas/notification.schema.json, and fails the test naming each one that breaks it."""
    seen: list[dict[str, Any]] = []
    broken: list[str] = []

    def check(note: dict[str, Any]) -> None:
        seen.append(note)
        broken.extend(f"{note.get('job_id')}: {v}" for v in violations("notification", note))

    NOTIFICATION_LISTENERS.append(check)
    try:
        yield seen
    finally:
        NOTIFICATION_LISTENERS.remove(check)
    assert broken == [], "notifications that break schemas/notification.schema.json"
