"""The README runs as written: every block marked `<!-- runnable -->` is executed in a clean
environment (fresh HOME, no AWS variables, config or credentials, the repository's .venv)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MARK = "<!-- runnable -->"
BLOCK = re.compile(re.escape(MARK) + r"\n```bash\n(.*?)```", re.S)
#: Each block's own bound; a block that hangs (a server that never starts) fails, not stalls.
BLOCK_TIMEOUT_S = 600
#: The port the README's --serve example uses; replaced by a free one so runs cannot collide.
README_PORT = "5000"


def runnable_blocks() -> list[tuple[int, str]]:
    """(line number, script) of each marked block, in README order."""
    return [(README[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(README)]


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def clean_checkout(tmp_path: Path) -> Path:
    """A working directory that looks like a fresh clone (the repository's files and its
    .venv, linked) so the blocks' outputs land in the test's own directory."""
    work = tmp_path / "repo"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in (".git", "out", "demo-out"):
            continue
        (work / entry.name).symlink_to(entry)
    return work


def clean_environment(home: Path) -> dict[str, str]:
    """What a new user's shell has: a PATH, a HOME with nothing in it, no AWS_* at all."""
    home.mkdir()
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
    }
    assert not [name for name in env if name.startswith("AWS_")]
    return env


def test_readme_marks_the_local_blocks_runnable_when_read() -> None:
    # Given the README's marked blocks
    scripts = [script for _line, script in runnable_blocks()]

    # Then the local runner, the --serve + CLI flow and the schema check are among them
    assert any("kling_local.runner --prompt" in s for s in scripts)
    assert any("--serve" in s and "kling-pipeline" in s and "--wait" in s for s in scripts)
    assert any("schemas/job-message.schema.json" in s for s in scripts)
    # and nothing that needs an AWS account or spends money is
    for script in scripts:
        assert "sam deploy" not in script
        assert "api.wavespeed.ai" not in script


@pytest.mark.slow
@pytest.mark.parametrize(("line", "script"), runnable_blocks(), ids=lambda v: str(v)[:40])
def test_readme_block_runs_as_written_when_the_machine_has_no_aws_setup(
    tmp_path: Path, line: int, script: str
) -> None:
    # Given a fresh checkout and a shell with no AWS configuration
    work = clean_checkout(tmp_path)
    env = clean_environment(tmp_path / "home")
    port = free_port()

    # When the block runs as written (bash, stopping at the first failing command)
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(README_PORT, port)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )

    # Then it succeeds
    assert completed.returncode == 0, (
        f"README block at line {line} failed ({completed.returncode}):\n"
        f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}"
    )
    if "--wait" in script:
        assert "s3://kling-local-videosbucket/videos/" in completed.stdout
