"""The Lambda layer: its requirement list is a closed set over the runtime, and the built layer
is small, free of the AWS SDK, and enough for every handler to import with tracing on."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "layers" / "common" / "requirements.txt"
BUILT_LAYER = ROOT / ".aws-sam" / "build" / "CommonLayer"
FUNCTIONS = ("submit", "poll", "finalize")
#: What the Lambda python3.13 runtime ships besides the standard library (boto3 and its closure).
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six"}
#: The AWS SDK must come from the runtime only: a copy in the layer would shadow it.
SDK_MODULES = ("boto3", "botocore", "s3transfer")
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six")
MAX_ZIPPED_BYTES = 5 * 1000 * 1000


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _layer_requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def _unconditional_dependencies(distribution: str) -> set[str]:
    """Requirements of an installed distribution that apply without extras, on Linux/3.13."""
    found: set[str] = set()
    for requirement in metadata.requires(distribution) or []:
        marker = requirement.partition(";")[2]
        if "extra" in marker:
            continue
        if "python_version" in marker and '< "3' in marker.replace("'", '"'):
            continue
        found.add(_name(requirement))
    return found


@pytest.fixture(scope="module")
def built_layer() -> Path:
    """The layer `make build` produced; CI (`make check-build`) requires it, `make test` may not
    have built it."""
    python_dir = BUILT_LAYER / "python"
    if not python_dir.is_dir():
        if os.environ.get("REQUIRE_LAYER_BUILD"):
            pytest.fail(f"{python_dir} is missing: run `make build` first")
        pytest.skip("the layer is not built (make build)")
    return python_dir


def test_layer_requirements_are_closed_over_the_runtime_when_read() -> None:
    # Given the layer's requirement list, installed with --no-deps
    listed = {_name(line) for line in _layer_requirements()}

    # When each listed package's own dependencies are looked up
    missing = {
        f"{name} needs {dependency}"
        for name in listed
        for dependency in _unconditional_dependencies(name)
        if dependency not in listed and dependency not in RUNTIME_PROVIDED
    }

    # Then every one is listed or shipped by the runtime, and the SDK is never listed
    assert not missing
    assert not listed & {"boto3", "botocore", "s3transfer"}


def test_layer_zip_stays_under_5_mb_when_built(built_layer: Path) -> None:
    # Given the built layer directory, zipped the way sam deploy uploads it
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(built_layer.parent.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(built_layer.parent).as_posix())

    # Then the archive is at most 5 MB
    assert archive.tell() <= MAX_ZIPPED_BYTES, f"layer zip is {archive.tell()} bytes"


def test_layer_ships_no_aws_sdk_when_built(built_layer: Path) -> None:
    # Given the top-level entries of the built layer
    entries = {path.name.split("-")[0].lower() for path in built_layer.iterdir()}

    # Then no boto3, botocore or s3transfer (package or dist-info) is among them
    assert not entries & set(SDK_MODULES)


def test_layer_bytecode_is_only_for_the_runtime_python_when_built(built_layer: Path) -> None:
    # Given the compiled files in the built layer
    compiled = [path.name for path in built_layer.rglob("*.pyc")]

    # Then each is for CPython 3.13, the functions' runtime (others would only be dead weight)
    assert all(".cpython-313." in name for name in compiled), sorted(
        name for name in compiled if ".cpython-313." not in name
    )[:5]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_handler_imports_with_tracing_when_layer_meets_runtime_sdk(
    built_layer: Path, function: str, tmp_path: Path
) -> None:
    # Given a runtime-like path: the function's code, the built layer, and only the SDK modules
    # the Lambda runtime provides (taken from this environment)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for module in RUNTIME_MODULES:
        spec = __import__(module)
        source = Path(spec.__file__ or "")
        origin = source.parent if source.name == "__init__.py" else source
        (runtime / origin.name).symlink_to(origin)
    code = ROOT / "functions" / function
    probe = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(code)!r}, {str(built_layer)!r}, {str(runtime)!r}]\n"
        "import app\n"
        "from kling_pipeline import observability\n"
        "from aws_xray_sdk.core import patch, xray_recorder\n"
        "patch(['botocore'])\n"
        "import aws_xray_sdk, botocore, wrapt\n"
        "print(json.dumps({'tracer': type(observability.tracer).__name__,\n"
        "  'xray': aws_xray_sdk.__file__, 'wrapt': wrapt.__file__,\n"
        "  'botocore': botocore.__file__, 'recorder': type(xray_recorder).__name__}))\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_FUNCTION_NAME": f"check-{function}",
        "LAMBDA_TASK_ROOT": str(code),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TRACING_ENABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "check",
    }

    # When the handler module is imported in a fresh interpreter without site-packages (-B:
    # no bytecode of this interpreter's version may land in the layer that gets deployed)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    # Then it loads, the real Tracer is in use, X-Ray comes from the layer, botocore from the
    # runtime
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["tracer"] == "Tracer"
    assert seen["xray"].startswith(str(built_layer))
    assert seen["wrapt"].startswith(str(built_layer))
    assert seen["botocore"].startswith(str(runtime))
