"""`--parameter-overrides` parsing and checking, against template.yaml's own parameter rules."""

from __future__ import annotations

from typing import Any

import pytest

from kling_local.cfn import Template
from kling_local.parameters import (
    ParameterError,
    check_value,
    parse_overrides,
    validate_overrides,
)

DECLARED: dict[str, Any] = Template.load().body["Parameters"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["DailyBudgetUsd=5"], {"DailyBudgetUsd": "5"}),
        (
            ["DailyBudgetUsd=5", "PollDeadlineSeconds=120"],
            {"DailyBudgetUsd": "5", "PollDeadlineSeconds": "120"},
        ),
        (
            ["DailyBudgetUsd=5 PollDeadlineSeconds=120"],
            {"DailyBudgetUsd": "5", "PollDeadlineSeconds": "120"},
        ),
        (["ParameterKey=DailyBudgetUsd,ParameterValue=5"], {"DailyBudgetUsd": "5"}),
        (["NotificationEmail="], {"NotificationEmail": ""}),
        (['ApiKeySecretName="a b"'], {"ApiKeySecretName": "a b"}),
        (["AllowedOutputHosts=a.example,b.example"], {"AllowedOutputHosts": "a.example,b.example"}),
        (["PollBackoff=1.5", "PollBackoff=2"], {"PollBackoff": "2"}),  # the last one wins
        (["Name=a=b"], {"Name": "a=b"}),
    ],
)
def test_overrides_parse_like_sam_deploy_when_written_its_ways(
    arguments: list[str], expected: dict[str, str]
) -> None:
    assert parse_overrides(arguments) == expected


@pytest.mark.parametrize("argument", ["DailyBudgetUsd", "=5", "Daily-Budget=5", "'unclosed=1"])
def test_overrides_raise_when_a_pair_is_not_name_equals_value(argument: str) -> None:
    with pytest.raises(ParameterError):
        parse_overrides([argument])


def accepted_and_refused(name: str) -> tuple[list[str], list[str]]:
    """Values the parameter's declared rules accept and refuse, generated from those rules."""
    spec = DECLARED[name]
    accepted = [str(spec["Default"])] if "Default" in spec else []
    refused: list[str] = []
    if spec["Type"] == "Number":
        refused.append("not-a-number")
        if "MinValue" in spec:
            accepted.append(str(spec["MinValue"]))
            refused.append(str(float(spec["MinValue"]) - 1))
        if "MaxValue" in spec:
            accepted.append(str(spec["MaxValue"]))
            refused.append(str(float(spec["MaxValue"]) + 0.5))
    if "AllowedValues" in spec:
        allowed = [str(v).lower() if isinstance(v, bool) else str(v) for v in spec["AllowedValues"]]
        accepted += allowed
        refused.append("9999" if spec["Type"] == "Number" else "not-allowed")
    if "AllowedPattern" in spec:
        refused.append("!!")
    return accepted, refused


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_each_parameter_accepts_and_refuses_by_its_rules_when_values_vary(name: str) -> None:
    # Given values generated from the parameter's own rules
    accepted, refused = accepted_and_refused(name)

    # Then each accepted value passes and each refused one is named with the rule it breaks
    for value in accepted:
        assert validate_overrides(DECLARED, {name: value}) == {name: value}
    for value in refused:
        with pytest.raises(ParameterError, match=name):
            validate_overrides(DECLARED, {name: value})


def test_unknown_name_is_refused_with_the_declared_names_when_misspelt() -> None:
    with pytest.raises(ParameterError, match="DailyBudgetUSD.*DailyBudgetUsd"):
        validate_overrides(DECLARED, {"DailyBudgetUSD": "5"})


def test_every_refused_override_is_reported_when_several_are_wrong() -> None:
    with pytest.raises(ParameterError) as refused:
        validate_overrides(DECLARED, {"MaxReceiveCount": "1", "EnableTracing": "yes", "X": "1"})
    assert all(name in str(refused.value) for name in ("MaxReceiveCount", "EnableTracing", "X"))


@pytest.mark.parametrize(
    ("spec", "value", "ok"),
    [
        ({"Type": "String", "MinLength": 2}, "a", False),
        ({"Type": "String", "MinLength": 2}, "ab", True),
        ({"Type": "String", "MaxLength": 3}, "abcd", False),
        ({"Type": "String", "AllowedPattern": "[a-z]+"}, "abc1", False),  # the whole value
        ({"Type": "String", "AllowedPattern": "[a-z]+"}, "abc", True),
        ({"Type": "Number"}, "1.5", True),
        ({"Type": "Number"}, "-3", True),
        ({"Type": "Number"}, "1e3", False),
        ({"Type": "Number", "AllowedValues": [1, 3]}, "3.0", True),
        ({"Type": "CommaDelimitedList", "AllowedValues": ["a", "b"]}, "a,b", True),
        ({"Type": "CommaDelimitedList", "AllowedValues": ["a", "b"]}, "a,c", False),
        ({"Type": "List<Number>", "MaxValue": 5}, "1,6", False),
        ({"Type": "AWS::EC2::KeyPair::KeyName"}, "mine", False),
    ],
)
def test_value_follows_the_declared_rule_when_types_and_rules_vary(
    spec: dict[str, Any], value: str, ok: bool
) -> None:
    assert (check_value(spec, value) == []) is ok
