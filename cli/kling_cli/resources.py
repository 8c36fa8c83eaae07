"""Where the deployed pipeline lives: names from a stack's Outputs (or flags) plus boto3 clients."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoRegionError,
    ProfileNotFound,
)

from . import EXIT_USAGE
from .errors import CliError

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

DEFAULT_STACK = "kling-pipeline"
#: A loopback endpoint is a local stand-in (the runner's `--serve`, moto, LocalStack): it checks
#: no signature, so the CLI signs with these instead of looking for (and sending) real ones.
INERT_ACCESS_KEY = "kling-local"
INERT_SECRET_KEY = "kling-local-not-a-secret"
#: The region the local runner creates its resources in, used when none is configured.
LOCAL_REGION = "us-east-1"
SERVE_HINT = "start the local pipeline with: python -m kling_local.runner --serve PORT"

#: template.yaml Output -> (Resources field, command-line override). Outputs are the public
#: contract of a deployed stack; their names change only with the template.
STACK_OUTPUTS = {
    "JobQueueUrl": ("queue_url", "--queue-url"),
    "JobsTableName": ("table", "--table"),
    "StateMachineArn": ("state_machine_arn", "--state-machine-arn"),
    "PromptsBucketName": ("prompts_bucket", "--prompts-bucket"),
    "VideosBucketName": ("videos_bucket", "--videos-bucket"),
    "NotificationTopicArn": ("topic_arn", "--topic-arn"),
    "DeadLetterQueueUrl": ("dead_letter_queue_url", "--dead-letter-queue-url"),
}
#: Without these no command works; the topic and the DLQ only add detail.
REQUIRED = ("queue_url", "table", "state_machine_arn", "prompts_bucket", "videos_bucket")


@dataclass(frozen=True)
class Resources:
    """Everything a command talks to. Tests build it from moto clients; users from a stack."""

    queue_url: str
    table: str
    state_machine_arn: str
    prompts_bucket: str
    videos_bucket: str
    sqs: SQSClient
    s3: S3Client
    dynamodb: DynamoDBClient
    sfn: SFNClient
    topic_arn: str | None = None
    dead_letter_queue_url: str | None = None


@dataclass(frozen=True)
class Connection:
    """How to reach AWS and which stack (or explicit names) to use, as given on the command line."""

    stack: str = DEFAULT_STACK
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    overrides: dict[str, str | None] | None = None


def stack_outputs(
    cloudformation: CloudFormationClient, stack: str, *, local: bool = False
) -> dict[str, str]:
    """The stack's Outputs as a name -> value mapping; `local` for a loopback endpoint."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if "does not exist" in message and local:
            raise CliError(
                f"stack {stack!r} not found at this endpoint: the local runner publishes "
                f"--stack kling-local; {SERVE_HINT}"
            ) from None
        if "does not exist" in message:
            raise CliError(
                f"stack {stack!r} not found; deploy it (sam deploy), pick another one with "
                "--stack or KLING_STACK, or name the resources with --queue-url, --table, ..."
            ) from None
        raise CliError(f"could not read stack {stack!r}: {message}") from None
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {o["OutputKey"]: o["OutputValue"] for o in outputs if "OutputKey" in o}


def is_loopback(endpoint_url: str | None) -> bool:
    """True for an endpoint on this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(endpoint_url or "").hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_region(connection: Connection, environ: Mapping[str, str]) -> str | None:
    """--region, then AWS_REGION, then AWS_DEFAULT_REGION, as the AWS CLI reads them.

    boto3 alone reads only AWS_DEFAULT_REGION; the profile's region comes after these (boto3).
    """
    return connection.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")


def open_session(connection: Connection, environ: Mapping[str, str] | None = None) -> boto3.Session:
    """The AWS session a command uses; inert credentials and a default region for loopback."""
    env = os.environ if environ is None else environ
    region = configured_region(connection, env)
    local = is_loopback(connection.endpoint_url)
    if connection.endpoint_url is not None and urlsplit(connection.endpoint_url).scheme not in (
        "http",
        "https",
    ):
        raise CliError(
            f"--endpoint-url {connection.endpoint_url!r} is not a URL: write it with its scheme, "
            "e.g. --endpoint-url http://127.0.0.1:5000",
            EXIT_USAGE,
        )
    try:
        if local and connection.profile is None:
            return boto3.Session(
                aws_access_key_id=INERT_ACCESS_KEY,
                aws_secret_access_key=INERT_SECRET_KEY,
                region_name=region or LOCAL_REGION,
            )
        session = boto3.Session(profile_name=connection.profile, region_name=region)
    except ProfileNotFound:
        raise CliError(
            f"AWS profile {connection.profile or env.get('AWS_PROFILE')!r} not found: name one "
            "that `aws configure list-profiles` shows (--profile or AWS_PROFILE), or create it "
            "with `aws configure --profile NAME`",
            EXIT_USAGE,
        ) from None
    except BotoCoreError as exc:
        raise CliError(
            f"could not set up AWS access: {exc}; check AWS_CONFIG_FILE and "
            "AWS_SHARED_CREDENTIALS_FILE, or run `aws configure`",
            EXIT_USAGE,
        ) from None
    if local:
        return session
    if session.region_name is None:
        raise CliError(
            "no AWS region: pass --region REGION, or set AWS_REGION (or AWS_DEFAULT_REGION), "
            "or give your profile a region with `aws configure`",
            EXIT_USAGE,
        )
    if session.get_credentials() is None:
        raise CliError(
            "no AWS credentials found: run `aws configure`, or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or pass --profile NAME; a local pipeline needs none: "
            "--endpoint-url http://127.0.0.1:PORT",
            EXIT_USAGE,
        )
    return session


def resolve_resources(connection: Connection) -> Resources:
    """Names from explicit overrides first, then from the stack's Outputs when any is missing."""
    session = open_session(connection)
    endpoint = connection.endpoint_url

    names: dict[str, str] = {
        name: value for name, value in (connection.overrides or {}).items() if value
    }
    try:
        if any(name not in names for name in REQUIRED):
            outputs = stack_outputs(
                session.client("cloudformation", endpoint_url=endpoint),
                connection.stack,
                local=is_loopback(endpoint),
            )
            for output, (name, _flag) in STACK_OUTPUTS.items():
                if name not in names and outputs.get(output):
                    names[name] = outputs[output]
        sqs = session.client("sqs", endpoint_url=endpoint)
        s3 = session.client("s3", endpoint_url=endpoint)
        dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        sfn = session.client("stepfunctions", endpoint_url=endpoint)
    except NoRegionError:  # checked in open_session; kept for a profile that loses its region
        raise CliError(
            "no AWS region: pass --region REGION, or set AWS_REGION (or AWS_DEFAULT_REGION)",
            EXIT_USAGE,
        ) from None
    except EndpointConnectionError:
        fix = SERVE_HINT if is_loopback(endpoint) else "check --endpoint-url and your network"
        raise CliError(f"nothing answers at {endpoint or 'AWS'}: {fix}") from None
    missing = [
        flag for name, flag in STACK_OUTPUTS.values() if name in REQUIRED and name not in names
    ]
    if missing:
        raise CliError(
            f"stack {connection.stack!r} has no value for {', '.join(missing)} "
            "(is it a kling-pipeline stack?); pass them explicitly",
            EXIT_USAGE,
        )
    return Resources(
        queue_url=names["queue_url"],
        table=names["table"],
        state_machine_arn=names["state_machine_arn"],
        prompts_bucket=names["prompts_bucket"],
        videos_bucket=names["videos_bucket"],
        sqs=sqs,
        s3=s3,
        dynamodb=dynamodb,
        sfn=sfn,
        topic_arn=names.get("topic_arn"),
        dead_letter_queue_url=names.get("dead_letter_queue_url"),
    )
