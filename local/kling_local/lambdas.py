"""Lambda emulation: the handlers template.yaml names, loaded and invoked as Lambda would."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .cfn import ROOT

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
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


def load_handler(code_uri: str, handler: str, logical_id: str) -> Handler:
    """Imports `CodeUri/<module>.py` under a name of its own (every function has an `app.py`)."""
    module_file, _, attribute = handler.rpartition(".")
    path = ROOT / code_uri / f"{module_file}.py"
    spec = importlib.util.spec_from_file_location(f"kling_fn_{logical_id.lower()}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the handler of {logical_id} from {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Handler = getattr(module, attribute)
    return function


class FunctionHost:
    """The functions of the local stack, by deployed name, run in this process."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, int]] = {}

    def add(self, name: str, handler: Handler, timeout_s: int) -> None:
        self._handlers[name] = (handler, timeout_s)

    def handler(self, function_name: str) -> Handler:
        """The loaded handler of a function, for tests that call it with their own context."""
        return self._handlers[function_name][0]

    def invoke(self, function_name: str, event: dict[str, Any]) -> tuple[str, bool, str]:
        """Runs a handler as Lambda would and shapes errors the way Step Functions reads them."""
        handler, timeout = self._handlers[function_name]
        try:
            result = handler(event, LambdaContext(function_name, timeout))
        except Exception as exc:  # noqa: BLE001 - reported to the state machine like Lambda
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return json.dumps(error), True, ""
        finally:
            # With metrics disabled nothing flushes them; Powertools would print a blob of EMF
            # on stdout every 100 values, mixing into the runner's one-line-per-job output.
            from kling_pipeline.observability import metrics

            metrics.clear_metrics()
        return json.dumps(result), False, ""
