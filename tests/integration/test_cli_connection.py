"""How `kling-pipeline` reaches AWS: region and credentials, and errors that name a working fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kling_cli.app import main
from kling_cli.errors import CliError
from kling_cli.resources import (
    INERT_ACCESS_KEY,
    LOCAL_REGION,
    Connection,
    open_session,
    resolve_resources,
)
from kling_local.pipeline import LocalPipeline

AWS_VARIABLES = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)
REMOTE = Connection()
LOCAL = Connection(endpoint_url="http://127.0.0.1:5000")


@pytest.fixture
def clean_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine with no AWS configuration: no variables, no config or credentials files."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    aws_dir = tmp_path / ".aws"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
    # No instance metadata service to wait for on a developer machine.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return aws_dir


def error_of(connection: Connection) -> str:
    with pytest.raises(CliError) as raised:
        open_session(connection)
    return raised.value.message


def test_loopback_endpoint_needs_no_credentials_or_region_when_nothing_is_configured(
    clean_aws: Path,
) -> None:
    # Given a machine with no AWS configuration at all
    # When the CLI is pointed at a loopback endpoint
    session = open_session(LOCAL)

    # Then it signs with inert credentials in the local runner's region
    credentials = session.get_credentials()
    assert credentials is not None
    assert credentials.access_key == INERT_ACCESS_KEY
    assert session.region_name == LOCAL_REGION


@pytest.mark.parametrize("endpoint", ["http://localhost:4566", "http://[::1]:5000"])
def test_loopback_endpoint_gets_inert_credentials_when_real_ones_are_configured(
    clean_aws: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    # Given real-looking credentials in the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-secret")

    # When the CLI talks to a local stand-in
    session = open_session(Connection(endpoint_url=endpoint))

    # Then it never signs with the real ones
    credentials = session.get_credentials()
    assert credentials is not None
    assert credentials.access_key == INERT_ACCESS_KEY


def test_region_comes_from_aws_region_when_only_that_is_set(
    clean_aws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given AWS_REGION (what the AWS CLI and the Lambda runtime set) and credentials
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")

    # When a session is opened for a deployed stack, then AWS_REGION is its region
    assert open_session(REMOTE).region_name == "eu-west-3"


@pytest.mark.parametrize(
    ("flag", "aws_region", "default_region", "expected"),
    [
        (None, None, "ap-south-1", "ap-south-1"),
        (None, "eu-west-3", "ap-south-1", "eu-west-3"),
        ("us-west-2", "eu-west-3", "ap-south-1", "us-west-2"),
    ],
)
def test_region_follows_the_aws_cli_order_when_several_are_given(
    clean_aws: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    aws_region: str | None,
    default_region: str | None,
    expected: str,
) -> None:
    # Given some of --region, AWS_REGION and AWS_DEFAULT_REGION, and a profile region
    clean_aws.mkdir()
    (clean_aws / "config").write_text("[default]\nregion = sa-east-1\n")
    for name, value in (("AWS_REGION", aws_region), ("AWS_DEFAULT_REGION", default_region)):
        if value is not None:
            monkeypatch.setenv(name, value)

    # When a session is opened for a loopback endpoint (no credentials needed)
    session = open_session(Connection(region=flag, endpoint_url="http://127.0.0.1:1"))

    # Then the flag wins, then AWS_REGION, then AWS_DEFAULT_REGION, then the profile
    assert session.region_name == expected


def test_no_region_error_names_aws_region_and_setting_it_works(
    clean_aws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given credentials but no region anywhere
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")

    # When a session is opened, the error names --region and AWS_REGION
    message = error_of(REMOTE)
    assert "--region" in message
    assert "AWS_REGION" in message

    # Then doing what it says works: by variable, and by flag
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert open_session(REMOTE).region_name == "eu-central-1"
    monkeypatch.delenv("AWS_REGION")
    assert open_session(Connection(region="eu-north-1")).region_name == "eu-north-1"


def test_no_credentials_error_names_fixes_and_each_works(
    clean_aws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a region but no credentials
    monkeypatch.setenv("AWS_REGION", "eu-central-1")

    # When a session is opened for a deployed stack
    message = error_of(REMOTE)

    # Then the message names the variables, a profile, and the local endpoint ...
    assert "AWS_ACCESS_KEY_ID" in message
    assert "--profile" in message
    assert "--endpoint-url http://127.0.0.1:PORT" in message
    assert open_session(Connection(endpoint_url="http://127.0.0.1:5000")).get_credentials()
    # ... a profile written as `aws configure --profile work` writes it ...
    clean_aws.mkdir()
    (clean_aws / "credentials").write_text(
        "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = work\n"
    )
    credentials = open_session(Connection(profile="work")).get_credentials()
    assert credentials is not None
    assert credentials.access_key == "AKIAWORK"
    # ... and the variables
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env")
    credentials = open_session(REMOTE).get_credentials()
    assert credentials is not None
    assert credentials.access_key == "AKIAENV"


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_unknown_profile_error_names_the_fix_and_creating_it_works(
    clean_aws: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Given a profile named on the command line or in AWS_PROFILE that does not exist
    connection = Connection(profile="work") if how == "flag" else REMOTE
    if how == "variable":
        monkeypatch.setenv("AWS_PROFILE", "work")

    # When a session is opened, the error names the profile and how to create it
    message = error_of(connection)
    assert "'work'" in message
    assert "aws configure --profile NAME" in message

    # Then once it exists (as `aws configure --profile work` writes it), the session opens
    clean_aws.mkdir()
    (clean_aws / "config").write_text("[profile work]\nregion = eu-west-1\n")
    (clean_aws / "credentials").write_text(
        "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = work\n"
    )
    assert open_session(connection).region_name == "eu-west-1"


def test_endpoint_without_scheme_is_refused_with_the_form_that_works(clean_aws: Path) -> None:
    # Given an endpoint written without its scheme
    message = error_of(Connection(endpoint_url="127.0.0.1:5000"))

    # Then the message shows the form that works, and that form does
    assert "--endpoint-url http://127.0.0.1:5000" in message
    assert open_session(Connection(endpoint_url="http://127.0.0.1:5000")).region_name


def test_unknown_stack_at_a_local_endpoint_names_the_local_stack_and_it_works(
    served: LocalPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the served local pipeline
    assert served.endpoint_url is not None

    # When the CLI asks it for the default (deployed) stack name
    code = main(["--endpoint-url", served.endpoint_url, "list"])

    # Then it exits 1 naming --stack kling-local, and that stack answers
    err = capsys.readouterr().err
    assert code == 1
    assert "--stack kling-local" in err
    assert main(["--stack", "kling-local", "--endpoint-url", served.endpoint_url, "list"]) == 0


def test_nothing_listening_at_a_local_endpoint_names_the_serve_command(clean_aws: Path) -> None:
    # Given a loopback port nothing listens on (bound and closed again)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # When the CLI is pointed at it
    with pytest.raises(CliError) as raised:
        resolve_resources(Connection(endpoint_url=f"http://127.0.0.1:{port}"))

    # Then the message says how to start the local pipeline
    assert "python -m kling_local.runner --serve PORT" in raised.value.message
