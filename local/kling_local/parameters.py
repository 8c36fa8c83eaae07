"""`--parameter-overrides` as `sam deploy` takes them, checked against the template's own rules."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
LONG_FORM = re.compile(r"^ParameterKey=(?P<key>[^,]*),ParameterValue=(?P<value>.*)$", re.S)
NAME = re.compile(r"^[A-Za-z0-9]+$")


class ParameterError(ValueError):
    """A parameter override the template would refuse, said in words a user can act on."""


def parse_overrides(arguments: Iterable[str]) -> dict[str, str]:
    """`NAME=VALUE` pairs (or `ParameterKey=NAME,ParameterValue=VALUE`), several per argument
    separated by spaces, quotes as in a shell; a later value for a name wins, as with sam."""
    overrides: dict[str, str] = {}
    for argument in arguments:
        try:
            pairs = shlex.split(argument)
        except ValueError as exc:
            raise ParameterError(f"cannot read {argument!r}: {exc}") from None
        for pair in pairs:
            long_form = LONG_FORM.match(pair)
            if long_form:
                name, value = long_form.group("key"), long_form.group("value")
            elif "=" in pair:
                name, value = pair.split("=", 1)
            else:
                raise ParameterError(f"{pair!r} is not NAME=VALUE")
            if not NAME.match(name):
                raise ParameterError(f"{pair!r}: a parameter name is letters and digits")
            overrides[name] = value
    return overrides


def validate_overrides(
    declared: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, str]
) -> dict[str, str]:
    """The overrides, once each names a declared parameter and meets its constraints; raises
    ParameterError listing every refused one otherwise."""
    problems: list[str] = []
    for name, value in overrides.items():
        if name not in declared:
            problems.append(
                f"{name}: the template declares no such parameter "
                f"(it has {', '.join(sorted(declared))})"
            )
            continue
        problems += [f"{name}={value!r}: {p}" for p in check_value(declared[name], value)]
    if problems:
        raise ParameterError("; ".join(problems))
    return dict(overrides)


def check_value(spec: Mapping[str, Any], value: str) -> list[str]:
    """What the template's constraints say about one value: nothing when it is accepted."""
    kind = str(spec.get("Type", "String"))
    if kind == "String":
        return _check_text(spec, value)
    if kind == "Number":
        return _check_number(spec, value)
    if kind == "CommaDelimitedList":
        # CloudFormation checks each item of a list against the item constraints.
        return [p for item in value.split(",") for p in _check_text(spec, item.strip())]
    if kind == "List<Number>":
        return [p for item in value.split(",") for p in _check_number(spec, item.strip())]
    return [f"parameters of type {kind} cannot be checked locally"]


def _allowed(spec: Mapping[str, Any], value: str, number: bool) -> list[str]:
    allowed = spec.get("AllowedValues")
    if allowed is None:
        return []
    if number:
        matches = any(NUMBER.match(str(a)) and float(a) == float(value) for a in allowed)
    else:
        matches = value in [_text(a) for a in allowed]
    return [] if matches else [f"must be one of {', '.join(_text(a) for a in allowed)}"]


def _check_text(spec: Mapping[str, Any], value: str) -> list[str]:
    problems = []
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        problems.append(f"must be at least {spec['MinLength']} characters")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        problems.append(f"must be at most {spec['MaxLength']} characters")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), value):
        problems.append(f"must match {pattern}")
    return problems + _allowed(spec, value, number=False)


def _check_number(spec: Mapping[str, Any], value: str) -> list[str]:
    if not NUMBER.match(value):
        return ["must be a number"]
    problems = []
    if "MinValue" in spec and float(value) < float(spec["MinValue"]):
        problems.append(f"must be at least {spec['MinValue']}")
    if "MaxValue" in spec and float(value) > float(spec["MaxValue"]):
        problems.append(f"must be at most {spec['MaxValue']}")
    return problems + _allowed(spec, value, number=True)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
