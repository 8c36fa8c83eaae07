"""The only place the local runner changes moto's internals; each change is undone on close.

moto offers no hook for either need below, so they are patched here, in one small module, and
every patch returns its undo.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from moto.core.botocore_stubber import BotocoreStubber

from .process import Undo

#: Runs a function by name: (payload JSON, errored, logs), the shape moto's Lambda model returns.
Invoke = Callable[[str, dict[str, Any]], tuple[str, bool, str]]


def route_lambda_invocations(invoke: Invoke) -> Undo:
    """moto would run a Lambda function in Docker; the Step Functions interpreter's Lambda tasks
    must reach the project's handlers in this process instead."""

    def invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else event
        return invoke(function.function_name, payload or {})

    patcher = mock.patch("moto.awslambda.models.LambdaFunction._invoke_lambda", invoke_lambda)
    patcher.start()
    return patcher.stop


def serialise_dynamodb() -> Undo:
    """DynamoDB applies a conditional write atomically; moto evaluates the condition and writes
    without a lock, so concurrent claims of one job could both win. Serialise DynamoDB calls
    (they never call out, so holding the lock cannot deadlock)."""
    lock = threading.Lock()
    process = BotocoreStubber.process_request

    def process_request(stubber: Any, request: Any) -> Any:
        if (urlsplit(request.url).hostname or "").startswith("dynamodb."):
            with lock:
                return process(stubber, request)
        return process(stubber, request)

    patcher = mock.patch.object(BotocoreStubber, "process_request", process_request)
    patcher.start()
    return patcher.stop


def parse_each_definition_once() -> Undo:
    """moto parses the whole ASL definition with ANTLR for every execution it starts (~30 ms of
    CPU for the job workflow, in the process that also runs the handlers); AWS runs workflows
    elsewhere. Each definition is parsed once: the program it yields keeps no execution state
    (that lives in each execution's environment), so executions can share it."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    parse = functools.lru_cache(maxsize=16)(AmazonStateLanguageParser.parse)
    patcher = mock.patch.object(AmazonStateLanguageParser, "parse", staticmethod(parse))
    patcher.start()
    return patcher.stop


def execute_state_machines_when_served() -> Undo:
    """moto's HTTP server reads its configuration from a module-level dict, not from the
    `mock_aws(config=...)` the in-process mode uses: without this, served executions would not
    run their states."""
    from moto.core.config import default_user_config

    section = default_user_config["stepfunctions"]
    previous = section.get("execute_state_machine", False)
    section["execute_state_machine"] = True
    return lambda: section.update({"execute_state_machine": previous})


def s3_events_name_their_version() -> Undo:
    """Real S3 event records carry the object's `versionId` (versioned buckets) and a
    `sequencer` that orders events of one key; moto's carry neither. The submit function reads
    each upload at the version its event names, so local uploads must name theirs."""
    from moto.s3 import notifications

    original = notifications._get_s3_event
    counter = iter(range(1, 1 << 62))
    lock = threading.Lock()

    def event_with_version(
        event_name: str, bucket: Any, key: Any, notification_id: str
    ) -> dict[str, list[dict[str, Any]]]:
        event = original(event_name, bucket, key, notification_id)
        with lock:
            sequencer = f"{next(counter):016X}"
        for record in event["Records"]:
            obj = record["s3"]["object"]
            obj["sequencer"] = sequencer
            version = getattr(key, "version_id", None)
            if version and version != "null":
                obj["versionId"] = version
        return event

    patcher = mock.patch.object(notifications, "_get_s3_event", event_with_version)
    patcher.start()
    return patcher.stop
