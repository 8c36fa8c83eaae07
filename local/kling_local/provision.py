"""Creates the resources template.yaml declares inside moto, named `kling-local-<LogicalId>`."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any, TypedDict

import boto3

from .cfn import ROOT, Template
from .function_urls import FunctionUrlServer
from .lambdas import FunctionHost, load_handler

REGION = "us-east-1"
ACCOUNT = "123456789012"
PREFIX = "kling-local"


class EventSourceMapping(TypedDict):
    """One SQS event source of a function, as the emulated Lambda poller drives it."""

    function: str
    queue_url: str
    queue_arn: str
    batch_size: int
    partial: bool


@dataclass(frozen=True)
class LocalShortcuts:
    """What provisioning shortens so a local run retries within seconds (none of it deploys)."""

    visibility_timeout_s: int = 2
    #: Step Functions Retry intervals really sleep in moto.
    max_retry_interval_s: int = 1


@dataclass
class LocalStack:
    """Where each logical resource of the template ended up."""

    names: dict[str, str] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    pollers: list[EventSourceMapping] = field(default_factory=list)
    state_machine_arn: str = ""
    #: Function URLs served on 127.0.0.1, by the logical id SAM gives them (`<Function>Url`).
    function_urls: dict[str, FunctionUrlServer] = field(default_factory=dict)


class Provisioner:
    """Creates every emulated resource kind, in dependency order, recording refs and attributes
    in the template so later resources resolve against the local ones."""

    def __init__(self, template: Template, host: FunctionHost, shortcuts: LocalShortcuts) -> None:
        self.template = template
        self.host = host
        self.shortcuts = shortcuts
        self.stack = LocalStack()
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)

    def provision(self, api_key: str) -> LocalStack:
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName=PREFIX,
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        self._secrets(api_key)
        self._tables()
        self._topics()
        self._queues()
        self._buckets()
        self._bucket_notifications()
        self._functions(role)
        self._state_machines(role)
        self._event_sources()
        return self.stack

    def _record(self, logical_id: str, ref: str, name: str, **attrs: str) -> None:
        self.template.refs[logical_id] = ref
        if attrs:
            self.template.attrs[logical_id] = attrs
        self.stack.names[logical_id] = name

    def _secrets(self, api_key: str) -> None:
        t = self.template
        client = boto3.client("secretsmanager", region_name=REGION)
        for logical_id, spec in t.of_type("AWS::SecretsManager::Secret").items():
            name = t.resolve(spec["Properties"]["Name"])
            arn = client.create_secret(Name=name, SecretString=api_key or "missing-api-key")["ARN"]
            self._record(logical_id, arn, name)

    def _tables(self) -> None:
        client = boto3.client("dynamodb", region_name=REGION)
        for logical_id, spec in self.template.of_type("AWS::DynamoDB::Table").items():
            props = spec["Properties"]
            name = f"{PREFIX}-{logical_id}"
            client.create_table(
                TableName=name,
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
            )
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            self._record(logical_id, name, name, Arn=arn)

    def _topics(self) -> None:
        client = boto3.client("sns", region_name=REGION)
        for logical_id in self.template.of_type("AWS::SNS::Topic"):
            arn = client.create_topic(Name=f"{PREFIX}-{logical_id}")["TopicArn"]
            self._record(logical_id, arn, arn, TopicName=arn.rsplit(":", 1)[1])

    def _queues(self) -> None:
        """Dead-letter queues first: a queue's redrive policy names its DLQ's ARN."""
        t = self.template
        pending = dict(t.of_type("AWS::SQS::Queue"))
        while pending:
            ready = {
                logical_id: spec
                for logical_id, spec in pending.items()
                if not _dead_letter_target(spec) or _dead_letter_target(spec) in t.attrs
            }
            if not ready:
                raise RuntimeError(f"queues without a known dead-letter queue: {sorted(pending)}")
            for logical_id, spec in ready.items():
                self._queue(logical_id, spec.get("Properties", {}))
                del pending[logical_id]

    def _queue(self, logical_id: str, props: dict[str, Any]) -> None:
        attributes: dict[str, str] = {
            "VisibilityTimeout": str(self.shortcuts.visibility_timeout_s),
            "MessageRetentionPeriod": str(
                self.template.resolve(props.get("MessageRetentionPeriod", 345600))
            ),
        }
        if "RedrivePolicy" in props:
            redrive = self.template.resolve(props["RedrivePolicy"])
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": redrive["deadLetterTargetArn"],
                    "maxReceiveCount": int(redrive["maxReceiveCount"]),
                }
            )
        name = f"{PREFIX}-{logical_id}"
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        self._record(logical_id, url, name, Arn=arn, QueueName=name, QueueUrl=url)
        self.stack.queue_urls[logical_id] = url

    def _buckets(self) -> None:
        for logical_id, spec in self.template.of_type("AWS::S3::Bucket").items():
            name = f"{PREFIX}-{logical_id.lower()}"
            self.s3.create_bucket(Bucket=name)
            if versioned(self.template, spec):
                self.s3.put_bucket_versioning(
                    Bucket=name, VersioningConfiguration={"Status": "Enabled"}
                )
            self._record(logical_id, name, name, Arn=f"arn:aws:s3:::{name}")

    def _bucket_notifications(self) -> None:
        """The S3 -> SQS trigger: moto delivers the event messages once the configuration is set."""
        t = self.template
        for logical_id, spec in t.of_type("AWS::S3::Bucket").items():
            notification = spec["Properties"].get("NotificationConfiguration")
            if not notification:
                continue
            self.s3.put_bucket_notification_configuration(
                Bucket=self.stack.names[logical_id],
                NotificationConfiguration={
                    "QueueConfigurations": queue_notifications(t.resolve(notification))
                },
            )

    def _functions(self, role: str) -> None:
        """A placeholder zip in moto (so ARNs and invocations exist); the handler runs here."""
        client = boto3.client("lambda", region_name=REGION)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
        t = self.template
        for logical_id in t.of_type("AWS::Serverless::Function"):
            # Globals merged in; only what is needed here is evaluated, as the environment
            # names resources (the state machine) that are created after the functions.
            props = t.declared_properties(logical_id)
            name = f"{PREFIX}-{logical_id}"
            timeout = int(t.resolve(props.get("Timeout", 3)))
            arn = client.create_function(
                FunctionName=name,
                Runtime="python3.13",
                Role=role,
                Handler=t.resolve(props["Handler"]),
                Code={"ZipFile": archive.getvalue()},
                Timeout=timeout,
            )["FunctionArn"]
            self._record(logical_id, name, name, Arn=arn)
            code_uri, entry = t.resolve(props["CodeUri"]), t.resolve(props["Handler"])
            handler = load_handler(code_uri, entry, logical_id)
            self.host.add(name, handler, timeout)
            if props.get("FunctionUrlConfig"):
                self._function_url(logical_id, name)

    def _function_url(self, logical_id: str, name: str) -> None:
        """SAM's `FunctionUrlConfig` makes an `AWS::Lambda::Url` named `<Function>Url`; here a
        server on 127.0.0.1 stands for it, and `!GetAtt <Function>Url.FunctionUrl` is its URL."""
        server = FunctionUrlServer(name, self.host.invoke).start()
        url_id = f"{logical_id}Url"
        self.stack.function_urls[url_id] = server
        self.template.attrs[url_id] = {"FunctionUrl": server.url, "FunctionArn": name}

    def _state_machines(self, role: str) -> None:
        t = self.template
        client = boto3.client("stepfunctions", region_name=REGION)
        for logical_id, spec in t.of_type("AWS::Serverless::StateMachine").items():
            props = spec["Properties"]
            definition = (ROOT / props["DefinitionUri"]).read_text()
            for key, value in t.resolve(props.get("DefinitionSubstitutions", {})).items():
                definition = definition.replace("${" + key + "}", str(value))
            definition = cap_retry_intervals(definition, self.shortcuts.max_retry_interval_s)
            arn = client.create_state_machine(
                name=f"{PREFIX}-{logical_id}",
                definition=definition,
                roleArn=role,
                type=props.get("Type", "STANDARD"),
            )["stateMachineArn"]
            self._record(logical_id, arn, arn)
            self.stack.state_machine_arn = arn

    def _event_sources(self) -> None:
        t = self.template
        for logical_id in t.of_type("AWS::Serverless::Function"):
            events = t.resolve(t.declared_properties(logical_id).get("Events", {})) or {}
            for event in events.values():
                if event["Type"] != "SQS":
                    continue
                props = event["Properties"]
                queue_arn = props["Queue"]
                queue_id = next(q for q, a in t.attrs.items() if a.get("Arn") == queue_arn)
                self.stack.pollers.append(
                    EventSourceMapping(
                        function=self.stack.names[logical_id],
                        queue_url=self.stack.queue_urls[queue_id],
                        queue_arn=queue_arn,
                        batch_size=int(props.get("BatchSize", 10)),
                        partial="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                    )
                )


def _dead_letter_target(spec: dict[str, Any]) -> str | None:
    """The logical id of the queue's dead-letter queue (`!GetAtt Dlq.Arn`), if it has one."""
    redrive = spec.get("Properties", {}).get("RedrivePolicy") or {}
    target = redrive.get("deadLetterTargetArn")
    if isinstance(target, dict) and "Fn::GetAtt" in target:
        resource, _ = target["Fn::GetAtt"]
        return str(resource)
    return None


def cap_retry_intervals(definition: str, cap: int) -> str:
    """Caps every Retry interval of an ASL definition (moto's interpreter really sleeps them)."""
    document = json.loads(definition)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for retrier in node.get("Retry", []) or []:
                retrier["IntervalSeconds"] = min(int(retrier.get("IntervalSeconds", 1)), cap)
                if "MaxDelaySeconds" in retrier:
                    retrier["MaxDelaySeconds"] = max(cap, 1)
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(document)
    return json.dumps(document)


def versioned(template: Template, spec: dict[str, Any]) -> bool:
    """Whether a bucket's template turns versioning on (the prompts bucket does)."""
    versioning = spec.get("Properties", {}).get("VersioningConfiguration") or {}
    return bool(template.resolve(versioning).get("Status") == "Enabled")


def queue_notifications(notification: dict[str, Any]) -> list[Any]:
    """A bucket's resolved NotificationConfiguration as S3's API takes its queue entries."""
    configs: list[Any] = []
    for config in notification.get("QueueConfigurations", []):
        entry: dict[str, Any] = {"QueueArn": config["Queue"], "Events": [config["Event"]]}
        rules = config.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        configs.append(entry)
    return configs
