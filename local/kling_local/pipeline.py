"""The whole pipeline in one process: moto resources from template.yaml, the real ASL, handlers."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO
from unittest import mock
from urllib.parse import urlsplit

import boto3
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

from .cfn import ROOT, Template
from .simulator import SimulatorConfig, WaveSpeedSimulator

ASL_DIR = ROOT / "statemachine"
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalOptions:
    """Knobs of a local run. Defaults make a run fast; none of them exist in a deployment."""

    api_base: str | None = None
    api_key: str | None = None
    #: Serve the moto AWS endpoint on this 127.0.0.1 port (0 = any) so other processes — the
    #: `kling-pipeline` CLI with `--endpoint-url` — can use the local pipeline. None: in-process.
    serve_port: int | None = None
    simulator: SimulatorConfig | None = None
    allow_output_hosts: list[str] = field(default_factory=list)
    #: Poll schedule for local runs (production floors are 5 s; locally 0 s is allowed).
    poll_first_wait_s: int = 1
    poll_interval_s: int = 1
    poll_deadline_s: int = 120
    #: The queue's visibility timeout, scaled down so retries happen within a local run.
    visibility_timeout_s: int = 2
    retry_base_s: float = 0.5
    #: Step Functions Retry intervals really sleep in moto: cap them for local runs.
    max_retry_interval_s: int = 1
    template_overrides: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    progress: TextIO | None = None


@dataclass
class RunResult:
    """What a run produced, as a user would look at it."""

    notifications: list[dict[str, Any]]
    jobs: dict[str, str]
    unfinished: list[str]
    elapsed_s: float

    def by_job(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for note in self.notifications:
            grouped.setdefault(note["job_id"], []).append(note)
        return grouped


class _Context:
    """The bits of a Lambda context that Powertools reads."""

    def __init__(self, name: str, timeout_s: int) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"
        self._deadline = time.time() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _load_handler(code_uri: str, handler: str, logical_id: str) -> Handler:
    module_file, _, attribute = handler.rpartition(".")
    path = ROOT / code_uri / f"{module_file}.py"
    spec = importlib.util.spec_from_file_location(f"kling_fn_{logical_id.lower()}", path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Handler = getattr(module, attribute)
    return function


def _atomic_dynamodb(process: Callable[..., Any]) -> Callable[..., Any]:
    """DynamoDB applies a conditional write atomically; moto evaluates the condition and writes
    without a lock, so concurrent claims of one job could both win. Serialise DynamoDB calls
    (they never call out, so holding the lock cannot deadlock)."""
    lock = threading.Lock()

    def process_request(stubber: Any, request: Any) -> Any:
        if (urlsplit(request.url).hostname or "").startswith("dynamodb."):
            with lock:
                return process(stubber, request)
        return process(stubber, request)

    return process_request


class LocalPipeline:
    """Provision, feed and drive the pipeline inside moto. Use as a context manager."""

    def __init__(self, options: LocalOptions | None = None) -> None:
        self.options = options or LocalOptions()
        self.template = Template.load(overrides=self.options.template_overrides)
        self.simulator: WaveSpeedSimulator | None = None
        self.handlers: dict[str, tuple[Handler, int]] = {}
        self.names: dict[str, str] = {}
        self.queue_urls: dict[str, str] = {}
        self.pollers: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self._seen_states: dict[str, str] = {}
        self._stack: list[Any] = []
        self._env_backup: dict[str, str | None] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalPipeline:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        options = self.options
        if options.api_base is None:
            self.simulator = WaveSpeedSimulator(options.simulator or SimulatorConfig())
            self.simulator.start()
            api_base = self.simulator.base_url
            api_key = self.simulator.config.api_key
            local_hosts = [self.simulator.host_port, *options.allow_output_hosts]
        else:
            api_base = options.api_base
            api_key = options.api_key or os.environ.get("WAVESPEED_API_KEY", "")
            local_hosts = list(options.allow_output_hosts)
        self._set_env(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "ERROR"),
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        # Metrics are off locally, so every flush would warn that there is nothing to publish.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.endpoint_url: str | None = None
        if options.serve_port is None:
            aws = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            aws.start()
            self._stack.append(aws.stop)
        else:
            self._serve(options.serve_port)
        patcher = mock.patch(
            "moto.awslambda.models.LambdaFunction._invoke_lambda", self._make_invoker()
        )
        patcher.start()
        self._stack.append(patcher.stop)
        atomic = mock.patch.object(
            BotocoreStubber, "process_request", _atomic_dynamodb(BotocoreStubber.process_request)
        )
        atomic.start()
        self._stack.append(atomic.stop)
        self.region = "us-east-1"
        self.sqs = boto3.client("sqs", region_name=self.region)
        self.s3 = boto3.client("s3", region_name=self.region)
        self.sns = boto3.client("sns", region_name=self.region)
        self.sfn = boto3.client("stepfunctions", region_name=self.region)
        self.dynamodb = boto3.client("dynamodb", region_name=self.region)
        self._provision(api_key)
        env = {}
        for logical_id in self.template.of_type("AWS::Serverless::Function"):
            env.update(self.template.function_environment(logical_id))
        env.update(
            {
                "WAVESPEED_API_BASE": api_base,
                "LOCAL_OUTPUT_HOSTS": ",".join(local_hosts),
                "POLL_FIRST_WAIT_S": str(options.poll_first_wait_s),
                "POLL_INTERVAL_S": str(options.poll_interval_s),
                "POLL_MAX_INTERVAL_S": str(max(options.poll_interval_s, 1)),
                "POLL_DEADLINE_S": str(options.poll_deadline_s),
                "POLL_MIN_INTERVAL_S": "0",
                "RETRY_BASE_S": str(options.retry_base_s),
            }
        )
        env.update(options.env)
        self._set_env(env)
        from kling_pipeline import wiring

        wiring.reset()
        self._stack.append(wiring.reset)

    def _serve(self, port: int) -> None:
        """moto as an HTTP server in this process: the handlers, the poller and the state
        machine's Lambda calls still run here, and other processes can reach every resource."""
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        previous = default_user_config["stepfunctions"].get("execute_state_machine", False)
        default_user_config["stepfunctions"]["execute_state_machine"] = True
        self._stack.append(
            lambda: default_user_config["stepfunctions"].update({"execute_state_machine": previous})
        )
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        self._stack.append(server.stop)
        host, bound = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{bound}"
        # MOTO_PORT: where moto's Step Functions interpreter sends its Lambda invocations.
        self._set_env({"AWS_ENDPOINT_URL": self.endpoint_url, "MOTO_PORT": str(bound)})

    def publish_stack(self, name: str = "kling-local") -> dict[str, str]:
        """A CloudFormation stack whose Outputs are the template's, resolved to the local
        resources, so tools that look a stack up by name (the CLI) find this pipeline."""
        outputs: dict[str, str] = {}
        for key, spec in self.template.body.get("Outputs", {}).items():
            with contextlib.suppress(Exception):  # outputs of resources not emulated locally
                outputs[key] = str(self.template.resolve(spec["Value"]))
        body = {
            "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        boto3.client("cloudformation", region_name=self.region).create_stack(
            StackName=name, TemplateBody=json.dumps(body)
        )
        return outputs

    def serve_forever(self, stop: threading.Event) -> None:
        """Keeps the emulated poller and the notification tap going until `stop` is set."""
        while not stop.is_set():
            if not self.poll_queues_once():
                self._drain_tap()
                if self.options.progress is not None:
                    self._report_states()
                stop.wait(0.2)

    def close(self) -> None:
        while self._stack:
            undo = self._stack.pop()
            with contextlib.suppress(Exception):  # keep tearing down the rest
                undo()
        for key, value in self._env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_backup.clear()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._env_backup.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    # ------------------------------------------------------------------ provisioning
    def _provision(self, api_key: str) -> None:
        iam = boto3.client("iam", region_name=self.region)
        role = iam.create_role(
            RoleName="kling-local",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        self._provision_secret(api_key)
        self._provision_tables_and_topics()
        self._provision_queues()
        self._provision_buckets()
        self._provision_functions(role)
        self._provision_state_machines(role)
        self._provision_pollers()
        self._provision_tap()

    def _provision_secret(self, api_key: str) -> None:
        t = self.template
        for logical_id, spec in t.of_type("AWS::SecretsManager::Secret").items():
            name = t.resolve(spec["Properties"]["Name"])
            arn = boto3.client("secretsmanager", region_name=self.region).create_secret(
                Name=name, SecretString=api_key or "missing-api-key"
            )["ARN"]
            t.refs[logical_id] = arn

    def _provision_tables_and_topics(self) -> None:
        t = self.template
        for logical_id, spec in t.of_type("AWS::DynamoDB::Table").items():
            props = spec["Properties"]
            name = f"kling-local-{logical_id}"
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
            )
            t.refs[logical_id] = name
            t.attrs[logical_id] = {"Arn": f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}"}
            self.names[logical_id] = name

        for logical_id in t.of_type("AWS::SNS::Topic"):
            arn = self.sns.create_topic(Name=f"kling-local-{logical_id}")["TopicArn"]
            t.refs[logical_id] = arn
            t.attrs[logical_id] = {"TopicName": arn.rsplit(":", 1)[1]}
            self.names[logical_id] = arn

    def _provision_queues(self) -> None:
        t = self.template
        queues = dict(t.of_type("AWS::SQS::Queue"))
        while queues:
            progressed = False
            for logical_id, spec in list(queues.items()):
                props = spec.get("Properties", {})
                redrive = props.get("RedrivePolicy")
                try:
                    redrive = t.resolve(redrive) if redrive else None
                except Exception:  # noqa: BLE001 - its dead-letter queue is not created yet
                    continue
                attributes: dict[str, str] = {
                    "VisibilityTimeout": str(self.options.visibility_timeout_s),
                    "MessageRetentionPeriod": str(props.get("MessageRetentionPeriod", 345600)),
                }
                if redrive:
                    attributes["RedrivePolicy"] = json.dumps(
                        {
                            "deadLetterTargetArn": redrive["deadLetterTargetArn"],
                            "maxReceiveCount": int(redrive["maxReceiveCount"]),
                        }
                    )
                name = f"kling-local-{logical_id}"
                url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
                arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
                t.refs[logical_id] = url
                t.attrs[logical_id] = {"Arn": arn, "QueueName": name, "QueueUrl": url}
                self.queue_urls[logical_id] = url
                del queues[logical_id]
                progressed = True
            if not progressed:
                raise RuntimeError(f"queues with unresolvable redrive: {sorted(queues)}")

    def _provision_buckets(self) -> None:
        t = self.template
        for logical_id in t.of_type("AWS::S3::Bucket"):
            name = f"kling-local-{logical_id.lower()}"
            self.s3.create_bucket(Bucket=name)
            t.refs[logical_id] = name
            t.attrs[logical_id] = {"Arn": f"arn:aws:s3:::{name}"}
            self.names[logical_id] = name
        for logical_id, spec in t.of_type("AWS::S3::Bucket").items():
            notification = spec["Properties"].get("NotificationConfiguration")
            if not notification:
                continue
            configs: list[Any] = []
            for config in t.resolve(notification).get("QueueConfigurations", []):
                entry: dict[str, Any] = {"QueueArn": config["Queue"], "Events": [config["Event"]]}
                rules = config.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                if rules:
                    entry["Filter"] = {"Key": {"FilterRules": rules}}
                configs.append(entry)
            self.s3.put_bucket_notification_configuration(
                Bucket=self.names[logical_id],
                NotificationConfiguration={"QueueConfigurations": configs},
            )

    def _provision_functions(self, role: str) -> None:
        t = self.template
        lambda_client = boto3.client("lambda", region_name=self.region)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
        functions = t.of_type("AWS::Serverless::Function")
        for logical_id, spec in functions.items():
            props = spec["Properties"]
            name = f"kling-local-{logical_id}"
            arn = lambda_client.create_function(
                FunctionName=name,
                Runtime="python3.13",
                Role=role,
                Handler=props["Handler"],
                Code={"ZipFile": archive.getvalue()},
                Timeout=int(props.get("Timeout", 3)),
            )["FunctionArn"]
            t.refs[logical_id] = name
            t.attrs[logical_id] = {"Arn": arn}
            handler = _load_handler(props["CodeUri"], props["Handler"], logical_id)
            self.handlers[name] = (handler, int(props.get("Timeout", 3)))
            self.names[logical_id] = name

    def _provision_state_machines(self, role: str) -> None:
        t = self.template
        for logical_id, spec in t.of_type("AWS::Serverless::StateMachine").items():
            props = spec["Properties"]
            definition = (ROOT / props["DefinitionUri"]).read_text()
            for key, value in t.resolve(props.get("DefinitionSubstitutions", {})).items():
                definition = definition.replace("${" + key + "}", str(value))
            definition = self._shrink_retries(definition)
            arn = self.sfn.create_state_machine(
                name=f"kling-local-{logical_id}",
                definition=definition,
                roleArn=role,
                type=props.get("Type", "STANDARD"),
            )["stateMachineArn"]
            t.refs[logical_id] = arn
            self.names[logical_id] = arn
            self.state_machine_arn = arn

    def _provision_pollers(self) -> None:
        t = self.template
        functions = t.of_type("AWS::Serverless::Function")
        for logical_id, spec in functions.items():
            for event in spec["Properties"].get("Events", {}).values():
                if event["Type"] != "SQS":
                    continue
                props = event["Properties"]
                queue_arn = t.resolve(props["Queue"])
                queue_id = next(q for q, a in t.attrs.items() if a.get("Arn") == queue_arn)
                self.pollers.append(
                    {
                        "function": self.names[logical_id],
                        "queue_url": self.queue_urls[queue_id],
                        "queue_arn": queue_arn,
                        "batch_size": int(props.get("BatchSize", 10)),
                        "partial": "ReportBatchItemFailures"
                        in props.get("FunctionResponseTypes", []),
                    }
                )

    def _provision_tap(self) -> None:
        t = self.template
        # A tap on the topic collects every notification exactly as published.
        self.tap_url = self.sqs.create_queue(QueueName="kling-local-notification-tap")["QueueUrl"]
        tap_arn = "arn:aws:sqs:us-east-1:123456789012:kling-local-notification-tap"
        for topic_id in t.of_type("AWS::SNS::Topic"):
            self.sns.subscribe(
                TopicArn=self.names[topic_id],
                Protocol="sqs",
                Endpoint=tap_arn,
                Attributes={"RawMessageDelivery": "true"},
            )

    def _shrink_retries(self, definition: str) -> str:
        document = json.loads(definition)
        cap = self.options.max_retry_interval_s

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

    def _make_invoker(self) -> Callable[..., tuple[str, bool, str]]:
        pipeline = self

        def invoke(function: Any, event: Any = None) -> tuple[str, bool, str]:
            payload = json.loads(event) if isinstance(event, str | bytes) else event
            return pipeline.invoke(function.function_name, payload or {})

        return invoke

    def invoke(self, function_name: str, event: dict[str, Any]) -> tuple[str, bool, str]:
        """Runs a handler as Lambda would and shapes errors the way Step Functions reads them."""
        handler, timeout = self.handlers[function_name]
        try:
            result = handler(event, _Context(function_name, timeout))
        except Exception as exc:  # noqa: BLE001 - reported to the state machine like Lambda
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return json.dumps(error), True, ""
        finally:
            # With metrics disabled nothing flushes them; Powertools would print a blob of EMF
            # on stdout every 100 values, mixing into the runner's one-line-per-job output.
            from kling_pipeline.observability import metrics

            metrics.clear_metrics()
        return json.dumps(result), False, ""

    # ------------------------------------------------------------------ inputs
    @property
    def job_queue_url(self) -> str:
        return self.queue_urls["JobQueue"]

    @property
    def dlq_url(self) -> str:
        return self.queue_urls["JobDeadLetterQueue"]

    @property
    def prompts_bucket(self) -> str:
        return self.names["PromptsBucket"]

    @property
    def videos_bucket(self) -> str:
        return self.names["VideosBucket"]

    def send_message(self, body: str) -> str:
        return self.sqs.send_message(QueueUrl=self.job_queue_url, MessageBody=body)["MessageId"]

    def send_prompt(self, prompt: str, **fields: Any) -> str:
        return self.send_message(json.dumps({"prompt": prompt, **fields}))

    def upload(self, name: str, data: bytes) -> str:
        key = f"prompts/{name}"
        self.s3.put_object(Bucket=self.prompts_bucket, Key=key, Body=data)
        return key

    # ------------------------------------------------------------------ driving
    def poll_queues_once(self) -> int:
        """One round of the emulated Lambda SQS poller; returns the records handled."""
        handled = 0
        for poller in self.pollers:
            messages = self.sqs.receive_message(
                QueueUrl=poller["queue_url"],
                MaxNumberOfMessages=poller["batch_size"],
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                continue
            handled += len(messages)
            event = {"Records": [self._record(m, poller["queue_arn"]) for m in messages]}
            payload, errored, _ = self.invoke(poller["function"], event)
            if errored:
                failed = {m["MessageId"] for m in messages}
            elif poller["partial"]:
                answer = json.loads(payload) or {}
                failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            else:
                failed = set()
            for message in messages:
                if message["MessageId"] not in failed:
                    self.sqs.delete_message(
                        QueueUrl=poller["queue_url"], ReceiptHandle=message["ReceiptHandle"]
                    )
        return handled

    @staticmethod
    def _record(message: Any, queue_arn: str) -> dict[str, Any]:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "dataType": value.get("DataType", "String"),
                "stringListValues": [],
                "binaryListValues": [],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": "us-east-1",
        }

    def _drain_tap(self) -> None:
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.tap_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                return
            for message in messages:
                note = json.loads(message["Body"])
                self.notifications.append(note)
                self._progress(note["job_id"], self._describe(note))
                self.sqs.delete_message(
                    QueueUrl=self.tap_url, ReceiptHandle=message["ReceiptHandle"]
                )

    @staticmethod
    def _describe(note: dict[str, Any]) -> str:
        if note["status"] == "completed":
            return "completed -> " + ", ".join(o["uri"] for o in note.get("outputs", []))
        error = note.get("error") or {}
        return f"{note['status']} ({error.get('code')}: {error.get('message')})"

    def _progress(self, job_id: str, text: str) -> None:
        stream = self.options.progress
        if stream is not None:
            print(f"[{time.strftime('%H:%M:%S')}] job {job_id}: {text}", file=stream, flush=True)

    def job_states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        paginator = self.dynamodb.get_paginator("scan")
        for page in paginator.paginate(TableName=self.names["JobsTable"]):
            for item in page.get("Items", []):
                pk = item["pk"]["S"]
                if not pk.startswith("job#"):
                    continue
                state = item.get("state", {}).get("S") or item.get("terminal_status", {}).get(
                    "S", ""
                )
                states[pk[4:]] = state
        return states

    def _report_states(self) -> None:
        for job_id, state in self.job_states().items():
            if self._seen_states.get(job_id) != state and state not in (
                "completed",
                "failed",
                "rejected",
            ):
                label = {"running": "waiting for the video (workflow running)"}.get(state, state)
                self._progress(job_id, label)
            self._seen_states[job_id] = state

    def _queue_busy(self) -> bool:
        for poller in self.pollers:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=poller["queue_url"],
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if int(attributes["ApproximateNumberOfMessages"]) or int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            ):
                return True
        return False

    def _running_executions(self) -> int:
        answer = self.sfn.list_executions(
            stateMachineArn=self.state_machine_arn, statusFilter="RUNNING"
        )
        return len(answer["executions"])

    def run_until_idle(self, timeout_s: float = 300.0) -> RunResult:
        """Drives pollers until no message is queued or in flight and no workflow runs."""
        started = time.time()
        idle_rounds = 0
        reported = 0.0
        while time.time() - started < timeout_s:
            handled = self.poll_queues_once()
            self._drain_tap()
            if self.options.progress is not None and time.time() - reported >= 0.5:
                # A full table scan: only for progress lines, and at most twice a second.
                self._report_states()
                reported = time.time()
            if handled:
                idle_rounds = 0
                continue
            if not self._queue_busy() and self._running_executions() == 0:
                idle_rounds += 1
                if idle_rounds >= 2:
                    break
            else:
                idle_rounds = 0
            time.sleep(0.1)
        self._drain_tap()
        states = self.job_states()
        notified = {note["job_id"] for note in self.notifications}
        unfinished = sorted(job for job in states if job not in notified)
        if time.time() - started >= timeout_s:
            unfinished = sorted(set(unfinished) | {"(timeout)"})
        return RunResult(
            notifications=list(self.notifications),
            jobs=states,
            unfinished=unfinished,
            elapsed_s=time.time() - started,
        )

    # ------------------------------------------------------------------ outputs
    def objects(self, bucket: str | None = None) -> Iterator[Any]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket or self.videos_bucket):
            yield from page.get("Contents", [])

    def read_object(self, key: str, bucket: str | None = None) -> bytes:
        body = self.s3.get_object(Bucket=bucket or self.videos_bucket, Key=key)["Body"]
        data: bytes = body.read()
        return data

    def incomplete_uploads(self) -> list[Any]:
        answer = self.s3.list_multipart_uploads(Bucket=self.videos_bucket)
        return list(answer.get("Uploads", []))

    def dead_letters(self) -> list[Any]:
        """Everything in the DLQ, left in place: each message is hidden while the queue is read
        (so the next receive returns others), then made visible again."""
        seen: dict[str, Any] = {}
        handles: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                VisibilityTimeout=30,
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                seen[message["MessageId"]] = message
                handles.append(message["ReceiptHandle"])
        for handle in handles:
            self.sqs.change_message_visibility(
                QueueUrl=self.dlq_url, ReceiptHandle=handle, VisibilityTimeout=0
            )
        return list(seen.values())

    def export(self, out_dir: Path) -> list[Path]:
        """Copies every produced object and writes notifications.jsonl."""
        written: list[Path] = []
        out_dir.mkdir(parents=True, exist_ok=True)
        for obj in self.objects():
            target = out_dir / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            body = self.s3.get_object(Bucket=self.videos_bucket, Key=obj["Key"])["Body"]
            with target.open("wb") as handle:
                shutil.copyfileobj(body, handle, 1024 * 1024)
            written.append(target)
        lines = "".join(json.dumps(note) + "\n" for note in self.notifications)
        (out_dir / "notifications.jsonl").write_text(lines)
        return written
