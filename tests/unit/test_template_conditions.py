"""template.yaml under each of its conditions flipped: resources and properties follow."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from kling_local.cfn import GLOBALS, NO_VALUE, Template, TemplateError
from kling_local.export import stack_outputs
from kling_local.parameters import ParameterError, validate_overrides

DEFAULTS = Template.load()
CONDITIONS = sorted(DEFAULTS.body.get("Conditions", {}))
Path = tuple[str | int, ...]


class AnyAttribute(dict[str, str]):
    """Every attribute of a resource, as a recognisable placeholder."""

    def __init__(self, logical_id: str) -> None:
        super().__init__()
        self.logical_id = logical_id

    def __missing__(self, attribute: str) -> str:
        return f"{self.logical_id}.{attribute}"


def load(overrides: dict[str, str]) -> Template:
    """template.yaml with these parameter values (only ones it accepts), every resource given a
    placeholder ref."""
    accepted = validate_overrides(DEFAULTS.body["Parameters"], overrides)
    template = Template.load(overrides=accepted)
    for logical_id in template.resources:
        template.refs[logical_id] = f"ref:{logical_id}"
        template.attrs[logical_id] = AnyAttribute(logical_id)
        if template.resources[logical_id].get("Properties", {}).get("FunctionUrlConfig"):
            # SAM's FunctionUrlConfig generates `<Function>Url` (AWS::Lambda::Url).
            template.attrs[f"{logical_id}Url"] = AnyAttribute(f"{logical_id}Url")
    return template


def parameters_of(condition: str) -> set[str]:
    """The parameters a condition reads, through the conditions it refers to."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" and value in DEFAULTS.body.get("Parameters", {}):
                    found.add(value)
                elif key == "Condition" and isinstance(value, str):
                    visit(DEFAULTS.body["Conditions"][value])
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(DEFAULTS.body["Conditions"][condition])
    return found


def candidates(name: str) -> list[str]:
    """Values worth trying for a parameter: its default, allowed values, edges, common flags."""
    spec = DEFAULTS.body["Parameters"][name]
    values = [str(spec.get("Default", "")), *(str(v) for v in spec.get("AllowedValues", []))]
    values += ["", "true", "false", "someone@example.com", "0", "1"]
    values += [str(spec[key]) for key in ("MinValue", "MaxValue") if key in spec]
    return list(dict.fromkeys(values))


def flipping_overrides(condition: str) -> dict[str, str]:
    """Parameter values the template accepts under which the condition has its other value."""
    default = DEFAULTS.condition(condition)
    names = sorted(parameters_of(condition))
    for combination in itertools.product(*(candidates(name) for name in names)):
        overrides = dict(zip(names, combination, strict=True))
        try:
            if load(overrides).condition(condition) != default:
                return overrides
        except (TemplateError, ParameterError):
            continue
    raise AssertionError(f"no parameter values flip condition {condition}")


def ifs_on(condition: str, node: Any, path: Path = ()) -> Iterator[tuple[Path, list[Any]]]:
    """Each outermost `Fn::If` on the condition whose place survives evaluation, by path."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"} and node["Fn::If"][0] == condition:
            yield path, node["Fn::If"]
            return
        if any(key == "Ref" or str(key).startswith("Fn::") for key in node):
            return  # inside another intrinsic: its place does not exist after evaluation
        for key, value in node.items():
            yield from ifs_on(condition, value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from ifs_on(condition, item, (*path, index))


def at(document: Any, path: Path) -> Any:
    for step in path:
        if isinstance(document, dict) and step not in document:
            return NO_VALUE
        document = document[step]
    return document


def effects(template: Template, condition: str) -> Iterator[tuple[str, Any, Any]]:
    """(where, evaluated, expected) for every use of the condition in resources and outputs."""
    holds = template.condition(condition)
    for logical_id, spec in template.resources.items():
        if spec.get("Condition") == condition:
            yield f"{logical_id} exists", template.exists(logical_id), holds
        if not template.exists(logical_id):
            continue
        merged = template.properties(logical_id)
        for path, (_, then, otherwise) in ifs_on(condition, spec.get("Properties", {})):
            expected = template.resolve(then if holds else otherwise)
            if path and isinstance(path[-1], int):
                # A list item that may be AWS::NoValue: the evaluated list is shorter, so the
                # item is looked for in it rather than at its declared index.
                items = at(merged, path[:-1])
                for branch in (then, otherwise):
                    value = template.resolve(branch)
                    if value is not None:
                        yield (
                            f"{logical_id}.{path} ({'then' if branch is then else 'else'})",
                            value in items,
                            value == expected,
                        )
                continue
            yield (
                f"{logical_id}.{path}",
                at(merged, path),
                NO_VALUE if expected is None else expected,
            )
    for section, body in DEFAULTS.body.get("Globals", {}).items():
        for path, (_, then, otherwise) in ifs_on(condition, body):
            expected = template.resolve(then if holds else otherwise)
            for logical_id, spec in template.resources.items():
                own = spec.get("Properties", {})
                if GLOBALS.get(section) == spec["Type"] and at(own, path) is NO_VALUE:
                    where = f"{logical_id}.{path} from Globals"
                    yield where, at(template.properties(logical_id), path), expected
    for key, output in DEFAULTS.body.get("Outputs", {}).items():
        if output.get("Condition") == condition:
            # An output with a false condition is not part of the stack.
            yield f"Outputs.{key} exists", key in stack_outputs(template), holds
        for path, (_, then, otherwise) in ifs_on(condition, output):
            yield (
                f"Outputs.{key}",
                at(template.resolve(output), path),
                template.resolve(then if holds else otherwise),
            )


@pytest.mark.parametrize("condition", CONDITIONS)
def test_resources_and_properties_follow_condition_when_parameters_flip_it(condition: str) -> None:
    # Given parameter values the template accepts that flip the condition
    overrides = flipping_overrides(condition)
    default, flipped = load({}), load(overrides)

    # When the whole template is evaluated both ways
    before = list(effects(default, condition))
    after = list(effects(flipped, condition))

    # Then every resource and property that depends on it follows, and something does
    assert before, f"{condition} is used by no resource, property or output"
    assert [(where, got) for where, got, expected in before if got != expected] == []
    assert [(where, got) for where, got, expected in after if got != expected] == []
    assert [got for _, got, _ in before] != [got for _, got, _ in after]


def test_every_resource_and_output_evaluates_when_parameters_are_defaults() -> None:
    # Given template.yaml with its defaults
    template = load({})

    # Then every intrinsic it uses is supported (nothing raises, nothing is left unevaluated)
    evaluated = [template.properties(r) for r in template.resources if template.exists(r)]
    evaluated += [template.resolve(o["Value"]) for o in template.body.get("Outputs", {}).values()]
    leftovers = [text for text in map(str, evaluated) if "Fn::" in text or "'Ref'" in text]
    assert leftovers == []


def test_email_subscriptions_exist_with_the_address_when_notification_email_given() -> None:
    # Given the default template, then one with an e-mail address
    without, with_email = load({}), load({"NotificationEmail": "ops@example.com"})

    # Then the subscriptions appear only with the address, pointing at it
    assert without.of_type("AWS::SNS::Subscription") == {}
    subscriptions = with_email.of_type("AWS::SNS::Subscription")
    assert len(subscriptions) >= 1
    assert {with_email.properties(s)["Endpoint"] for s in subscriptions} == {"ops@example.com"}
