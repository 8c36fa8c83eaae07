"""Where the deployed pipeline lives: names from a stack's Outputs (or flags) plus boto3 clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from . import EXIT_USAGE
from .errors import CliError

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

DEFAULT_STACK = "kling-pipeline"

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


def stack_outputs(cloudformation: CloudFormationClient, stack: str) -> dict[str, str]:
    """The stack's Outputs as a name -> value mapping."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if "does not exist" in message:
            raise CliError(
                f"stack {stack!r} not found; deploy it (sam deploy), pick another one with "
                "--stack or KLING_STACK, or name the resources with --queue-url, --table, ..."
            ) from None
        raise CliError(f"could not read stack {stack!r}: {message}") from None
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {o["OutputKey"]: o["OutputValue"] for o in outputs if "OutputKey" in o}


def resolve_resources(connection: Connection) -> Resources:
    """Names from explicit overrides first, then from the stack's Outputs when any is missing."""
    try:
        session = boto3.Session(profile_name=connection.profile, region_name=connection.region)
    except BotoCoreError as exc:
        raise CliError(f"could not set up AWS access: {exc}", EXIT_USAGE) from None
    endpoint = connection.endpoint_url

    names: dict[str, str] = {
        name: value for name, value in (connection.overrides or {}).items() if value
    }
    try:
        if any(name not in names for name in REQUIRED):
            outputs = stack_outputs(
                session.client("cloudformation", endpoint_url=endpoint), connection.stack
            )
            for output, (name, _flag) in STACK_OUTPUTS.items():
                if name not in names and outputs.get(output):
                    names[name] = outputs[output]
        sqs = session.client("sqs", endpoint_url=endpoint)
        s3 = session.client("s3", endpoint_url=endpoint)
        dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        sfn = session.client("stepfunctions", endpoint_url=endpoint)
    except NoRegionError:
        raise CliError(
            "no AWS region: pass --region, or set AWS_REGION / a profile region", EXIT_USAGE
        ) from None
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
