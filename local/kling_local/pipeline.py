"""The whole pipeline in one process: moto resources from template.yaml, the real ASL, handlers.

The parts, each in its own module: `configure` (template parameters, local shortcuts, the
functions' environment), `provision` (resources from the template), `lambdas` (the handlers, run
as Lambda would), `poller` (the SQS event source), `observe` (notifications, job states,
progress), `stack_view` and `export` (inputs, outputs, `--out`, the stack `--serve` publishes),
`process` and `moto_patches` (the process-wide changes a run needs, each undone on close).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import boto3
from moto import mock_aws

from . import moto_patches
from .configure import function_environment, local_template
from .export import publish_stack
from .lambdas import FunctionHost
from .observe import NotificationTap, Progress, job_states
from .poller import SqsPoller
from .process import ScopedEnvironment, ignore_warning, quiet_logger
from .provision import REGION, LocalShortcuts, LocalStack, Provisioner
from .simulator import SimulatorConfig, WaveSpeedSimulator
from .stack_view import StackView


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
    #: Template parameters as `sam deploy --parameter-overrides` takes them; checked against
    #: the template's constraints, and winning over the local shortcuts below.
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    #: The longest wait for a webhook before the status is read anyway (production: 300 s).
    webhook_fallback_s: int = 3
    #: Poll schedule shortcuts (production floors are 5 s; locally 0 s is allowed).
    poll_first_wait_s: int = 1
    poll_interval_s: int = 1
    #: The simulator's videos take seconds: a stuck job fails in 2 minutes, not an hour.
    poll_deadline_s: int = 120
    #: The queue's visibility timeout, scaled down so retries happen within a local run.
    visibility_timeout_s: int = 2
    retry_base_s: float = 0.5
    #: Step Functions Retry intervals really sleep in moto: cap them for local runs.
    max_retry_interval_s: int = 1
    #: Parameter values taken unchecked (tests that need a value the template refuses).
    template_overrides: dict[str, Any] = field(default_factory=dict)
    #: Function environment variables set last, over everything the template gives.
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


def _stop_servers(provisioner: Provisioner) -> None:
    for server in provisioner.stack.function_urls.values():
        server.stop()


def webhook_secret_problem(stack: LocalStack) -> str | None:
    """Why the functions will submit without a webhook although the stack enables them
    (the API's signing secret cannot be read), or None.

    Reads the secret through the functions' own cached reader, so the submit path decides on
    this very answer (no second request) and a run can say at once that it will poll.
    """
    from kling_pipeline import wiring
    from kling_pipeline.webhook.secret import WebhookSecretUnavailable

    if "WebhookFunctionUrl" not in stack.function_urls:
        return None
    try:
        wiring.webhook_secret().get()
    except WebhookSecretUnavailable as exc:
        return exc.message
    return None


class LocalPipeline(StackView):
    """Provision, feed and drive the pipeline inside moto. Use as a context manager."""

    def __init__(self, options: LocalOptions | None = None) -> None:
        self.options = options or LocalOptions()
        self.template = local_template(self.options)
        self.simulator: WaveSpeedSimulator | None = None
        self.endpoint_url: str | None = None
        self.region = REGION
        self.functions = FunctionHost()
        self.progress = Progress(self.options.progress)
        self._environment = ScopedEnvironment()
        self._undo: list[Callable[[], None]] = []
        #: Set at start when webhooks are enabled but the API's signing secret cannot be read:
        #: every job of the run is then polled (never failed), and this says why.
        self.webhooks_off_reason: str | None = None

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
        api_base, api_key, local_hosts = self._wavespeed()
        self._environment.set(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "ERROR"),
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        # Metrics are off locally, so every flush would warn that there is nothing to publish.
        self._undo.append(ignore_warning("No application metrics to publish"))
        if options.serve_port is None:
            aws = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            aws.start()
            self._undo.append(aws.stop)
        else:
            self._serve(options.serve_port)
        self._undo.append(moto_patches.route_lambda_invocations(self.invoke))
        self._undo.append(moto_patches.serialise_dynamodb())
        self._undo.append(moto_patches.parse_each_definition_once())
        self._undo.append(moto_patches.s3_events_name_their_version())
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sns = boto3.client("sns", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        shortcuts = LocalShortcuts(
            visibility_timeout_s=options.visibility_timeout_s,
            max_retry_interval_s=options.max_retry_interval_s,
        )
        provisioner = Provisioner(self.template, self.functions, shortcuts)
        # Registered before provisioning, so servers it started stop even if it fails half-way.
        self._undo.append(lambda: _stop_servers(provisioner))
        self.stack = provisioner.provision(api_key)
        self.poller = SqsPoller(self.stack.pollers, self.functions)
        topics = [self.names[t] for t in self.template.of_type("AWS::SNS::Topic")]
        self.tap = NotificationTap(self.sqs, self.sns, topics)
        self._environment.set(function_environment(self.template, options, api_base, local_hosts))
        from kling_pipeline import wiring

        # Services and clients cached by an earlier pipeline point at resources that are gone.
        wiring.reset()
        self._undo.append(wiring.reset)
        self.webhooks_off_reason = webhook_secret_problem(self.stack)

    def _wavespeed(self) -> tuple[str, str, list[str]]:
        """The API the handlers call, its key, and the hosts allowed to serve plain-http outputs."""
        options = self.options
        if options.api_base is not None:
            api_key = options.api_key or os.environ.get("WAVESPEED_API_KEY", "")
            return options.api_base, api_key, list(options.allow_output_hosts)
        self.simulator = WaveSpeedSimulator(options.simulator or SimulatorConfig())
        self.simulator.start()
        hosts = [self.simulator.host_port, *options.allow_output_hosts]
        return self.simulator.base_url, self.simulator.config.api_key, hosts

    def _serve(self, port: int) -> None:
        """moto as an HTTP server in this process: the handlers, the poller and the state
        machine's Lambda calls still run here, and other processes can reach every resource."""
        from moto.server import ThreadedMotoServer

        self._undo.append(moto_patches.execute_state_machines_when_served())
        self._undo.append(quiet_logger("werkzeug"))  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        self._undo.append(server.stop)
        host, bound = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{bound}"
        # The server shares moto's process-wide backends, which only an in-process mock resets:
        # without this, a pipeline served after another in one process meets its resources.
        reset = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10):
            pass
        # MOTO_PORT: where moto's Step Functions interpreter sends its Lambda invocations.
        self._environment.set({"AWS_ENDPOINT_URL": self.endpoint_url, "MOTO_PORT": str(bound)})

    def close(self) -> None:
        """Undoes everything the pipeline changed, in reverse order; safe to call twice."""
        while self._undo:
            undo = self._undo.pop()
            with contextlib.suppress(Exception):  # keep tearing down the rest
                undo()
        self._environment.restore()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None

    @property
    def webhook_url(self) -> str:
        """Where the local webhook endpoint listens (LookupError when webhooks are off)."""
        server = self.stack.function_urls.get("WebhookFunctionUrl")
        if server is None:
            raise LookupError("webhooks are off in this stack (EnableWebhooks=false)")
        return server.url

    def publish_stack(self, name: str = "kling-local") -> dict[str, str]:
        """Publishes the template's Outputs, resolved locally, as stack `name` (for the CLI)."""
        return publish_stack(self.template, name)

    def serve_forever(self, stop: threading.Event) -> None:
        """Keeps the emulated poller and the notification tap going until `stop` is set."""
        while not stop.is_set():
            if not self.poll_queues_once():
                self._observe()
                stop.wait(0.2)

    def invoke(self, function_name: str, event: dict[str, Any]) -> tuple[str, bool, str]:
        """Runs a function's handler as Lambda would (see `FunctionHost.invoke`)."""
        return self.functions.invoke(function_name, event)

    def poll_queues_once(self) -> int:
        """One round of the emulated Lambda SQS poller; returns the records handled."""
        return self.poller.poll_once(self.sqs)

    def job_states(self) -> dict[str, str]:
        return job_states(self.dynamodb, self.names["JobsTable"])

    def _observe(self, with_states: bool = True) -> None:
        self.progress.notified(self.tap.drain())
        if with_states and self.progress.enabled:
            # A full table scan: only for progress lines.
            self.progress.states(self.job_states())

    def _idle(self) -> bool:
        if self.poller.busy(self.sqs):
            return False
        running = self.sfn.list_executions(
            stateMachineArn=self.state_machine_arn, statusFilter="RUNNING"
        )
        return not running["executions"]

    def run_until_idle(self, timeout_s: float = 300.0) -> RunResult:
        """Drives pollers until no message is queued or in flight and no workflow runs."""
        started = time.time()
        idle_rounds = 0
        reported = 0.0
        while time.time() - started < timeout_s:
            handled = self.poll_queues_once()
            # States at most twice a second: each report scans the jobs table.
            due = time.time() - reported >= 0.5
            self._observe(with_states=due)
            if due:
                reported = time.time()
            if handled:
                idle_rounds = 0
                continue
            # Two idle rounds in a row: a message can be between the queue and a workflow.
            idle_rounds = idle_rounds + 1 if self._idle() else 0
            if idle_rounds >= 2:
                break
            time.sleep(0.1)
        self._observe(with_states=False)
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
