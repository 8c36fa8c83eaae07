"""Strict JSON decoding: every hostile class is a ValidationError naming its rule, never a crash."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from kling_pipeline.errors import ValidationError
from kling_pipeline.strict_json import clip, dumps, loads, looks_like_json

RNG = random.Random(20261129)


def _nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


HOSTILE: list[tuple[str, str]] = [
    ("nan", '{"metadata": {"x": NaN}}'),
    ("infinity", '{"metadata": {"x": Infinity}}'),
    ("minus_infinity", '{"guidance_scale": -Infinity}'),
    ("float_overflow", '{"guidance_scale": 1e400}'),
    ("long_float", '{"guidance_scale": 0.' + "1" * 500 + "}"),
    ("int_5000_digits", '{"duration": ' + "9" * 5000 + "}"),
    ("int_400_digits", '{"guidance_scale": ' + "1" * 400 + "}"),
    ("negative_huge_int", '{"metadata": {"n": -' + "7" * 300 + "}}"),
    ("duplicate_keys", '{"prompt": "a", "prompt": "b"}'),
    ("nested_duplicate", '{"metadata": {"k": 1, "k": 2}, "prompt": "a"}'),
    ("deep_lists", '{"metadata": {"x": ' + _nested(2000) + "}}"),
    ("deep_objects", '{"a":' * 1500 + "1" + "}" * 1500),
    ("lone_surrogate_escape", '{"prompt": "fox \\ud800 snow"}'),
    ("lone_low_surrogate_key", '{"\\udc00": 1}'),
    ("truncated", '{"prompt": "a"'),
    ("trailing_garbage", '{"prompt": "a"} {"prompt": "b"}'),
]


@pytest.mark.parametrize(("name", "text"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_loads_refuses_with_rule_when_hostile(name: str, text: str) -> None:
    # Given a hostile document / When decoded / Then a ValidationError, nothing else
    with pytest.raises(ValidationError) as raised:
        loads(text)
    assert raised.value.rule


def test_loads_refuses_every_depth_past_the_limit_without_recursion() -> None:
    # Given nesting at every depth around and far past the limit
    for depth in [33, 40, 999, 1000, 1001, 5000, 50_000]:
        for opener, closer in (("[", "]"), ('{"k":', "}")):
            text = opener * depth + "0" + closer * depth
            # When / Then
            with pytest.raises(ValidationError):
                loads(text)


def test_loads_ignores_brackets_inside_strings_when_counting_depth() -> None:
    # Given a string full of brackets and escaped quotes
    text = json.dumps({"prompt": "[[[[{{{{" * 200 + '\\"]]]' + "}" * 50})
    # When / Then it decodes
    assert loads(text)["prompt"].startswith("[[[[")


def test_loads_accepts_bom_and_whitespace_around_a_strict_document() -> None:
    assert loads('\ufeff  {"prompt": "a", "duration": 10}\n') == {"prompt": "a", "duration": 10}


def test_loads_round_trips_random_valid_documents() -> None:
    # Given random valid documents within the limits
    for _ in range(300):
        doc = _random_value(RNG, depth=RNG.randint(0, 6))
        text = json.dumps({"metadata": doc}, ensure_ascii=RNG.random() < 0.5)
        # When / Then
        assert loads(text) == {"metadata": doc}


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.choice(
        ["int", "float", "str", "bool", "null", "list", "dict"]
        if depth
        else ["int", "float", "str", "bool", "null"]
    )
    if kind == "int":
        return rng.randint(-(10**18), 10**18)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "str":
        return "".join(
            chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0xD7FF)]))
            for _ in range(rng.randint(0, 12))
        )
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _random_value(rng, depth - 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_dumps_refuses_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        dumps({"metadata": {"x": value}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", True),
        ("\ufeff{", True),
        ("  [1]", True),
        ("a fox", False),
        ('"quoted"', False),
        ("", False),
        ("\ufeff a fox {", False),
    ],
)
def test_looks_like_json_only_for_objects_and_arrays(text: str, expected: bool) -> None:
    assert looks_like_json(text) is expected


def test_clip_bounds_hostile_values_for_echo() -> None:
    # Given a value with a 90 KB key, a 256 KB string, 10,000 items and deep nesting
    hostile = {
        "k" * 90_000: "v" * 262_144,
        "items": list(range(10_000)),
        "deep": json.loads(_nested(30)),
    }
    # When clipped / Then its JSON is small whatever the input
    assert len(json.dumps(clip(hostile))) < 8_000
