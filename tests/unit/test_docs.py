"""The README documents every user-facing surface: commands, runner options, parameters."""

from __future__ import annotations

import re
from pathlib import Path

from kling_local.cfn import Template
from kling_local.runner import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_demo_and_test_commands_when_read_top_down() -> None:
    # Given the README's first code block
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)

    # Then it is the two commands a new user runs first
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"]


def test_readme_documents_every_runner_option_when_options_change() -> None:
    # Given the local runner's command-line options
    options = {
        flag
        for action in build_parser()._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag not in ("--help", "--demo")
    }

    # Then each one appears in the README
    missing = sorted(flag for flag in options if f"`{flag}" not in README)
    assert missing == []


def test_readme_documents_every_template_parameter_when_parameters_change() -> None:
    # Given the template's parameters
    parameters = Template.load().body["Parameters"]

    # Then each one is in the README's parameter table
    missing = sorted(name for name in parameters if f"`{name}`" not in README)
    assert missing == []


def test_readme_documents_every_make_target_when_targets_change() -> None:
    # Given the Makefile's user-facing targets
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY: (.*)$", makefile, re.M)
    assert phony is not None
    targets = set(phony.group(1).split()) - {"help", "clean"}

    # Then each one is shown as a command in the README
    missing = sorted(target for target in targets if f"make {target}" not in README)
    assert missing == []
