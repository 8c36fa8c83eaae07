"""Reads template.yaml and resolves its intrinsic functions, so local runs use its wiring."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


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


for _short, _long in {
    "!Ref": "Ref",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!If": "Fn::If",
    "!Not": "Fn::Not",
    "!Equals": "Fn::Equals",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!Condition": "Condition",
}.items():
    _Loader.add_constructor(_short, _tag(_long))


class Unresolvable(Exception):
    """A reference to something the local environment does not provide."""


@dataclass
class Template:
    """The parsed template plus the values its references resolve to."""

    body: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = TEMPLATE, overrides: Mapping[str, Any] | None = None) -> Template:
        body = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
        params: dict[str, Any] = {}
        for name, spec in body.get("Parameters", {}).items():
            default = spec.get("Default", "")
            if spec.get("Type") == "CommaDelimitedList":
                default = [part.strip() for part in str(default).split(",") if part.strip()]
            params[name] = default
        params.update(overrides or {})
        template = cls(body=body, parameters=params)
        template.refs.update(
            {
                "AWS::AccountId": "123456789012",
                "AWS::Region": "us-east-1",
                "AWS::Partition": "aws",
                "AWS::StackName": "kling-local",
                "AWS::NoValue": None,
            }
        )
        return template

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.body["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: spec for name, spec in self.resources.items() if spec["Type"] == kind}

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.body.get("Conditions", {})[name]))

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals merged with the function's own variables, resolved."""
        merged: dict[str, Any] = dict(
            self.body.get("Globals", {})
            .get("Function", {})
            .get("Environment", {})
            .get("Variables", {})
        )
        own = self.resources[logical_id]["Properties"].get("Environment", {})
        merged.update(own.get("Variables", {}))
        return {key: str(self.resolve(value)) for key, value in merged.items()}

    def resolve(self, value: Any) -> Any:
        """Evaluates intrinsic functions against the refs and attributes known so far."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            intrinsic = self._intrinsics().get(key)
            if intrinsic is not None:
                return intrinsic(arg)
        return {key: self.resolve(item) for key, item in value.items()}

    def _intrinsics(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._fn_sub,
            "Fn::Join": lambda arg: arg[0].join(str(item) for item in self.resolve(arg[1])),
            "Fn::If": lambda arg: self.resolve(arg[1] if self.condition(arg[0]) else arg[2]),
            "Fn::Not": lambda arg: not self.resolve(arg[0]),
            "Fn::Equals": lambda arg: self.resolve(arg[0]) == self.resolve(arg[1]),
            "Fn::Select": lambda arg: self.resolve(arg[1])[int(arg[0])],
            "Condition": self.condition,
        }

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise Unresolvable(f"Ref {name}")

    def _get_att(self, arg: Any) -> Any:
        resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
        try:
            return self.attrs[resource][attribute]
        except KeyError:
            raise Unresolvable(f"GetAtt {resource}.{attribute}") from None

    def _fn_sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(self._sub(m.group(1), extra)), text)

    def _sub(self, name: str, extra: Mapping[str, Any]) -> Any:
        if name in extra:
            return self.resolve(extra[name])
        if "." in name:
            return self.resolve({"Fn::GetAtt": name.split(".", 1)})
        return self.resolve({"Ref": name})
