"""Reads template.yaml and evaluates its intrinsic functions, so local runs use its wiring.

Every intrinsic the evaluator accepts is evaluated the way CloudFormation does; anything else
(an unknown `Fn::`, a malformed argument, a reference nothing provides) raises, so a local run
can never quietly differ from the deployed template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

#: Short tags the loader reads; evaluation decides which of them are supported.
SHORT_TAGS = {
    "!Ref": "Ref",
    "!Condition": "Condition",
    **{
        f"!{name}": f"Fn::{name}"
        for name in [
            "GetAtt",
            "Sub",
            "Join",
            "Select",
            "Split",
            "If",
            "Equals",
            "And",
            "Or",
            "Not",
            "FindInMap",
            "Base64",
            "Cidr",
            "GetAZs",
            "ImportValue",
            "Length",
            "ToJsonString",
            "Transform",
        ]
    },
}
PSEUDO_PARAMETERS = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "kling-local",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/kling-local/local",
}
#: SAM `Globals` sections and the resource type each applies to.
GLOBALS = {
    "Function": "AWS::Serverless::Function",
    "StateMachine": "AWS::Serverless::StateMachine",
    "LayerVersion": "AWS::Serverless::LayerVersion",
    "Api": "AWS::Serverless::Api",
    "HttpApi": "AWS::Serverless::HttpApi",
    "SimpleTable": "AWS::Serverless::SimpleTable",
}


class _NoValue:
    """`Ref: AWS::NoValue`: the property (or list item) it stands for is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


class TemplateError(Exception):
    """The template cannot be evaluated locally as CloudFormation would evaluate it."""


class Unresolvable(TemplateError):
    """A reference to something the local environment does not provide."""


class UnsupportedIntrinsic(TemplateError):
    """An intrinsic function the local evaluator does not implement, or one used wrongly."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form tags."""


def _tag(name: str) -> Callable[[yaml.Loader, yaml.Node], Any]:
    def construct(loader: yaml.Loader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            assert isinstance(node, yaml.MappingNode)
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _short, _long in SHORT_TAGS.items():
    _Loader.add_constructor(_short, _tag(_long))


def parse(text: str) -> dict[str, Any]:
    """A template's YAML (short tags included) as plain data."""
    body = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(body, dict):
        raise TemplateError("a template is a mapping")
    return body


def scalar_text(value: Any, where: str) -> str:
    """A scalar as CloudFormation turns it into a string (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise UnsupportedIntrinsic(f"{where} needs a string, got {value!r}")


def parameter_value(spec: Mapping[str, Any], raw: Any) -> str | list[str]:
    """What `Ref` of a parameter returns: a string, or a list of strings for list types."""
    kind = str(spec.get("Type", "String"))
    if kind in ("CommaDelimitedList", "List<Number>"):
        items = raw if isinstance(raw, list) else scalar_text(raw, "a list parameter").split(",")
        return [scalar_text(item, "a list parameter").strip() for item in items]
    return scalar_text(raw, "a parameter")


@dataclass
class Template:
    """The parsed template plus the values its references resolve to."""

    body: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = TEMPLATE, overrides: Mapping[str, Any] | None = None) -> Template:
        """The template file with its parameters' defaults, then `overrides` (taken as given)."""
        return cls.from_text(path.read_text(), overrides)

    @classmethod
    def from_text(cls, text: str, overrides: Mapping[str, Any] | None = None) -> Template:
        body = parse(text)
        specs: dict[str, Any] = body.get("Parameters", {})
        unknown = sorted(set(overrides or {}) - set(specs))
        if unknown:
            raise Unresolvable(f"the template declares no parameter {', '.join(unknown)}")
        values = {name: spec["Default"] for name, spec in specs.items() if "Default" in spec}
        values.update(overrides or {})
        params = {name: parameter_value(specs[name], raw) for name, raw in values.items()}
        return cls(body=body, parameters=params, refs=dict(PSEUDO_PARAMETERS))

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.body["Resources"]
        return resources

    def exists(self, logical_id: str) -> bool:
        """Whether the resource is created: it has no `Condition`, or its condition holds."""
        name = self.resources[logical_id].get("Condition")
        return name is None or self.condition(str(name))

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        """The resources of one type that this template's conditions create."""
        return {
            name: spec
            for name, spec in self.resources.items()
            if spec["Type"] == kind and self.exists(name)
        }

    def condition(self, name: str, _active: tuple[str, ...] = ()) -> bool:
        conditions: dict[str, Any] = self.body.get("Conditions", {})
        if name not in conditions:
            raise Unresolvable(f"Condition {name} is not declared")
        if name in _active:
            raise UnsupportedIntrinsic(f"conditions refer to each other: {' -> '.join(_active)}")
        value = _Evaluator(self, (*_active, name)).evaluate(conditions[name])
        if not isinstance(value, bool):
            raise UnsupportedIntrinsic(f"Condition {name} is not a condition function: {value!r}")
        return value

    def declared_properties(self, logical_id: str) -> dict[str, Any]:
        """A resource's properties with SAM `Globals` merged in, intrinsics left as written."""
        spec = self.resources[logical_id]
        own: dict[str, Any] = spec.get("Properties", {})
        section = next((key for key, kind in GLOBALS.items() if kind == spec["Type"]), None)
        defaults = self.body.get("Globals", {}).get(section, {}) if section else {}
        merged: dict[str, Any] = _merge_globals(defaults, own)
        return merged

    def properties(self, logical_id: str) -> dict[str, Any]:
        """A resource's properties, SAM `Globals` merged in, every intrinsic evaluated."""
        resolved: dict[str, Any] = self.resolve(self.declared_properties(logical_id)) or {}
        return resolved

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals merged with the function's own variables, resolved (only those: the rest of
        a function's properties may name resources the local run does not create)."""
        declared = self.declared_properties(logical_id).get("Environment", {})
        environment = self.resolve(declared) or {}
        variables: dict[str, Any] = environment.get("Variables", {})
        return {key: scalar_text(value, f"variable {key}") for key, value in variables.items()}

    def resolve(self, value: Any) -> Any:
        """Evaluates intrinsic functions against the refs and attributes known so far
        (`AWS::NoValue` at the top comes back as None)."""
        result = _Evaluator(self).evaluate(value)
        return None if result is NO_VALUE else result


def _merge_globals(defaults: Any, own: Any) -> Any:
    """SAM's rule: maps merge (the resource wins), lists append, other values are replaced."""
    if isinstance(defaults, dict) and isinstance(own, dict):
        merged = dict(defaults)
        for key, value in own.items():
            merged[key] = _merge_globals(defaults[key], value) if key in defaults else value
        return merged
    if isinstance(defaults, list) and isinstance(own, list):
        return [*defaults, *own]
    return own


class _Evaluator:
    """One evaluation; `active` holds the conditions being evaluated (to refuse cycles)."""

    def __init__(self, template: Template, active: tuple[str, ...] = ()) -> None:
        self.template = template
        self.active = active
        self.functions: dict[str, Callable[[Any], Any]] = {
            "Ref": self.ref,
            "Condition": self.condition,
            "Fn::GetAtt": self.get_att,
            "Fn::Sub": self.sub,
            "Fn::Join": self.join,
            "Fn::Select": self.select,
            "Fn::Split": self.split,
            "Fn::If": self.if_,
            "Fn::Equals": self.equals,
            "Fn::And": lambda arg: all(self.conditions(arg, "Fn::And", 2, 10)),
            "Fn::Or": lambda arg: any(self.conditions(arg, "Fn::Or", 2, 10)),
            "Fn::Not": lambda arg: not self.conditions(arg, "Fn::Not", 1, 1)[0],
            "Fn::FindInMap": self.find_in_map,
        }

    def evaluate(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.evaluate(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        intrinsic = [key for key in value if key == "Ref" or str(key).startswith("Fn::")]
        if len(value) == 1 and (intrinsic or ("Condition" in value and _is_str(value))):
            ((name, arg),) = value.items()
            function = self.functions.get(name)
            if function is None:
                raise UnsupportedIntrinsic(f"{name} is not supported by the local evaluator")
            return function(arg)
        if intrinsic:
            raise UnsupportedIntrinsic(f"{intrinsic[0]} must be the only key of its object")
        evaluated = {key: self.evaluate(item) for key, item in value.items()}
        return {key: item for key, item in evaluated.items() if item is not NO_VALUE}

    def text(self, value: Any, where: str) -> str:
        return scalar_text(self.evaluate(value), where)

    def ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise UnsupportedIntrinsic(f"Ref takes a name, got {name!r}")
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.template.parameters:
            return self.template.parameters[name]
        if name in self.template.refs:
            return self.template.refs[name]
        raise Unresolvable(f"Ref {name}")

    def condition(self, name: str) -> bool:
        return self.template.condition(name, self.active)

    def get_att(self, arg: Any) -> Any:
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
            raise UnsupportedIntrinsic(f"Fn::GetAtt takes [resource, attribute], got {arg!r}")
        resource, attribute = arg[0], self.text(arg[1], "Fn::GetAtt's attribute")
        try:
            return self.template.attrs[resource][attribute]
        except KeyError:
            raise Unresolvable(f"GetAtt {resource}.{attribute}") from None

    def sub(self, arg: Any) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], arg[1]
        else:
            raise UnsupportedIntrinsic(f"Fn::Sub takes a string or [string, map], got {arg!r}")
        if not isinstance(text, str):
            raise UnsupportedIntrinsic(f"Fn::Sub's template must be a string, got {text!r}")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is written as ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return self.text(variables[name], f"Fn::Sub variable {name}")
            if "." in name:
                return scalar_text(self.get_att(name.split(".", 1)), f"${{{name}}}")
            return scalar_text(self.ref(name), f"${{{name}}}")

        return re.sub(r"\$\{([^}]*)\}", replace, text)

    def join(self, arg: Any) -> str:
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
            raise UnsupportedIntrinsic(f"Fn::Join takes [delimiter, list], got {arg!r}")
        items = self.evaluate(arg[1])
        if not isinstance(items, list):
            raise UnsupportedIntrinsic(f"Fn::Join needs a list, got {items!r}")
        return arg[0].join(scalar_text(item, "a Fn::Join item") for item in items)

    def select(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise UnsupportedIntrinsic(f"Fn::Select takes [index, list], got {arg!r}")
        index, items = self.text(arg[0], "Fn::Select's index"), self.evaluate(arg[1])
        if not index.isdigit() or not isinstance(items, list) or int(index) >= len(items):
            raise UnsupportedIntrinsic(f"Fn::Select cannot take item {index} of {items!r}")
        return items[int(index)]

    def split(self, arg: Any) -> list[str]:
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and arg[0]):
            raise UnsupportedIntrinsic(f"Fn::Split takes [delimiter, string], got {arg!r}")
        return self.text(arg[1], "Fn::Split's source").split(arg[0])

    def if_(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) == 3 and isinstance(arg[0], str)):
            raise UnsupportedIntrinsic(f"Fn::If takes [condition, then, else], got {arg!r}")
        return self.evaluate(arg[1] if self.condition(arg[0]) else arg[2])

    def equals(self, arg: Any) -> bool:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise UnsupportedIntrinsic(f"Fn::Equals takes two values, got {arg!r}")
        left, right = (self.text(item, "Fn::Equals") for item in arg)
        return left == right

    def conditions(self, arg: Any, name: str, least: int, most: int) -> list[bool]:
        """The operands of Fn::And / Fn::Or / Fn::Not, each a condition, all evaluated."""
        if not (isinstance(arg, list) and least <= len(arg) <= most):
            raise UnsupportedIntrinsic(f"{name} takes {least} to {most} conditions, got {arg!r}")
        values = [self.evaluate(item) for item in arg]
        for item, value in zip(arg, values, strict=True):
            if not isinstance(value, bool):
                raise UnsupportedIntrinsic(f"{name} operand {item!r} is not a condition")
        return values

    def find_in_map(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) == 3):
            raise UnsupportedIntrinsic(f"Fn::FindInMap takes [map, key, key], got {arg!r}")
        path = [self.text(item, "Fn::FindInMap") for item in arg]
        value: Any = self.template.body.get("Mappings", {})
        for key in path:
            if not isinstance(value, dict) or key not in value:
                raise Unresolvable(f"Fn::FindInMap {'/'.join(path)}")
            value = value[key]
        return value


def _is_str(value: dict[str, Any]) -> bool:
    return isinstance(value.get("Condition"), str)
