"""The distribution ships every package of the three source roots (a wheel must not lose one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_lists_every_package_when_subpackages_are_added() -> None:
    # Given the package-dir mapping and package list of pyproject.toml
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    # When every directory holding an __init__.py under the mapped roots is collected
    found = set()
    for name, where in config["package-dir"].items():
        base = ROOT / where
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            found.add(".".join((name, *relative.parts)) if relative.parts else name)
    # Then the two agree
    assert listed == found
