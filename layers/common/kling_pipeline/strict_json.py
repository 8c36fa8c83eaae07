"""Strict JSON at every boundary: what comes in is bounded, what goes out is valid JSON.

Python's `json` accepts things that break the pipeline later: NaN and Infinity (invalid JSON that
Step Functions refuses and subscribers cannot parse), duplicate keys (the last one silently
wins), integers of thousands of digits (`int()` raises past 4,300 digits, outside validation),
nesting deep enough to raise RecursionError, and lone UTF-16 surrogates (which cannot be encoded
as UTF-8 when the value is published). Every decode here turns those into a `ValidationError`
naming the rule, and every encode refuses non-finite numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError

BOM = "\ufeff"
#: Whitespace and byte-order marks, in any order, before where a JSON body starts.
_LEADING = re.compile(r"[\s\ufeff]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a decoded document; generous for real jobs, small enough to stay cheap."""

    max_depth: int = 32
    max_int_digits: int = 20
    max_number_chars: int = 64


DEFAULT_LIMITS = JsonLimits()


def _max_depth(text: str) -> int:
    """Deepest bracket nesting outside strings, found without recursion."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class _NonFinite(str):
    """Stands for NaN/Infinity until the object holding it names the field."""


def _mark_constant(name: str) -> Any:
    return _NonFinite(name)


def _refuse_non_finite(where: str, name: str) -> ValidationError:
    return ValidationError(where, f"must be strict JSON: {name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(field_name(key), "appears more than once in the object")
        if isinstance(value, _NonFinite):
            raise _refuse_non_finite(field_name(key), value)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, _NonFinite):
                    raise _refuse_non_finite(field_name(key), item)
        result[key] = value
    return result


def field_name(key: str) -> str:
    """A field name safe to echo in an error: a hostile key can be 90 KB long."""
    return key if len(key) <= 64 else f"{key[:61]}..."


def loads(text: str, *, limits: JsonLimits = DEFAULT_LIMITS, what: str = "body") -> Any:
    """Decodes one strict JSON document, or raises ValidationError(what, rule).

    A leading byte-order mark and surrounding whitespace are allowed (editors write them); the
    document itself must be strict: no NaN/Infinity, no duplicate keys, bounded numbers and
    nesting, no lone surrogates.
    """
    stripped = text.removeprefix(BOM).strip()
    depth = _max_depth(stripped)
    if depth > limits.max_depth:
        raise ValidationError(what, f"nests {depth} levels deep, the limit is {limits.max_depth}")

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > limits.max_int_digits:
            raise ValidationError(
                what, f"holds an integer of {len(digits)} digits (limit {limits.max_int_digits})"
            )
        return int(digits)

    def parse_float(literal: str) -> float:
        value = float(literal) if len(literal) <= limits.max_number_chars else math.inf
        if not math.isfinite(value):
            raise ValidationError(what, f"holds a number out of range ({literal[:24]}...)")
        return value

    try:
        decoded = json.loads(
            stripped,
            parse_int=parse_int,
            parse_float=parse_float,
            parse_constant=_mark_constant,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise ValidationError(
            what, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:  # belt and braces: the depth scan should have caught it
        raise ValidationError(what, "nests too deeply") from None
    _refuse_leftover_constants(decoded, what)
    if _SURROGATE.search(stripped) or ("\\u" in stripped.lower() and _has_surrogate(decoded)):
        raise ValidationError(what, "holds a lone UTF-16 surrogate, which is not valid Unicode")
    return decoded


def _refuse_leftover_constants(value: Any, what: str) -> None:
    """NaN/Infinity at the top or inside nested lists, where no field names them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _NonFinite):
            raise _refuse_non_finite(what, item)
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decodes_as_json(text: str) -> bool:
    """True when `text` is some JSON document (any type), strict or not; cheap on bombs.

    Numbers are not converted, so a 5,000-digit integer costs nothing here.
    """
    stripped = text.removeprefix(BOM).strip()
    if not stripped or stripped[0] in "{[":
        return looks_like_json(text)
    try:
        json.loads(stripped, parse_int=len, parse_float=len, parse_constant=len)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


def looks_like_json(text: str) -> bool:
    """True when a body was meant as JSON: a plain-text prompt never starts like this.

    Byte-order marks and whitespace before the bracket are skipped in any order and number:
    a body pasted or concatenated by tools can carry a BOM after a newline, and it is still a
    job object (or an error), never a prompt that would pay.
    """
    start = _LEADING.match(text)
    return text[start.end() if start else 0 :][:1] in ("{", "[")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Encodes strictly: NaN/Infinity raise instead of producing invalid JSON."""
    separators = None if indent else (",", ":")
    return json.dumps(value, allow_nan=False, indent=indent, separators=separators)


def clip(
    value: Any,
    *,
    max_chars: int = 512,
    max_items: int = 32,
    depth: int = 4,
    budget: int = 16_384,
) -> Any:
    """A bounded copy of a (possibly hostile) decoded value, for echoing back in a refusal:
    long strings and keys are cut, long containers truncated, deep ones summarised, and the
    whole copy holds at most about `budget` characters of text however wide the input."""
    left = [budget]

    def text(raw: str, limit: int) -> str:
        limit = max(0, min(limit, left[0]))
        cut = raw if len(raw) <= limit else raw[:limit] + "..."
        left[0] -= len(cut) + 2
        return cut

    def walk(item: Any, level: int) -> Any:
        if isinstance(item, str):
            return text(item, max_chars)
        if isinstance(item, bool) or item is None:
            return item
        if isinstance(item, int | float):
            if isinstance(item, float) and not math.isfinite(item):
                return None
            if isinstance(item, int) and abs(item) >= 10**20:
                return "(an integer too long to echo)"
            return item
        if level <= 0 or left[0] <= 0:
            return "..."
        if isinstance(item, dict):
            out: dict[str, Any] = {}
            for key, sub in list(item.items())[:max_items]:
                if left[0] <= 0:
                    break
                out[text(field_name(str(key)), 64)] = walk(sub, level - 1)
            return out
        if isinstance(item, list | tuple):
            items: list[Any] = []
            for sub in list(item)[:max_items]:
                if left[0] <= 0:
                    break
                items.append(walk(sub, level - 1))
            return items
        return text(str(item), max_chars)

    return walk(value, depth)
