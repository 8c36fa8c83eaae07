"""Every events/ file invoked in-process as `sam local invoke -e <event> --env-vars
events/env.json` would run it: the function's environment is its template Environment (Globals
merged), overridden by env.json only where the template declares the variable, plus what the SAM
CLI sets itself; AWS is moto built from template.yaml, WaveSpeed the simulator started as the
README says (its key, the seeded prediction)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from kling_local.lambdas import LambdaContext
from kling_local.pipeline import LocalPipeline
from kling_local.simulator import SimulatorConfig, WaveSpeedSimulator
from kling_pipeline import wiring
from kling_pipeline.settings import settings_from
from tests.conftest import EVENTS, ROOT, PipelineFactory

#: What the README's simulator command seeds, and the address env.json and the events name.
SEEDED_PREDICTION = "0123456789abcdef0123456789abcdef"
SHIPPED_SIMULATOR = "127.0.0.1:8099"
#: The scratch resources the README has you create for the events (nothing in the stack
#: listens to them, so an event never sets a paid submission going by itself).
SCRATCH_BUCKET = "kling-events-prompts-example"
SCRATCH_QUEUE = "kling-events-jobs"
#: env.json entries the README has you fill in from the deployed stack's Outputs.
STACK_NAMES = {
    "JOBS_TABLE": "JobsTable",
    "VIDEOS_BUCKET": "VideosBucket",
    "NOTIFICATION_TOPIC_ARN": "NotificationTopic",
    "DEAD_LETTER_QUEUE_URL": "JobDeadLetterQueue",
    "API_KEY_SECRET": "ApiKeySecret",
    "STATE_MACHINE_ARN": "JobStateMachine",
}
#: The deployed secret holds the user's real key; the simulator must never be sent it.
REAL_KEY = "real-wavespeed-key-kept-in-the-secret"

#: The job the poll and finalize events carry.
EVENT_JOB_ID = "demo-job-0001"

Invoke = Callable[[str, str], Any]


def shipped(name: str, sim: WaveSpeedSimulator) -> str:
    """A file of events/ as shipped, the simulator's port being the one the test could bind."""
    return (EVENTS / name).read_text().replace(SHIPPED_SIMULATOR, sim.host_port)


def env_json(pipeline: LocalPipeline, sim: WaveSpeedSimulator) -> dict[str, Any]:
    """events/env.json with the stack's names filled in, as the README says to."""
    config: dict[str, Any] = json.loads(shipped("env.json", sim))
    for variable, logical_id in STACK_NAMES.items():
        config["Parameters"][variable] = pipeline.names[logical_id]
    return config


def sam_environment(
    pipeline: LocalPipeline, logical_id: str, config: dict[str, Any]
) -> dict[str, str]:
    """The SAM CLI's rule: template values, then env.json's `Parameters`, then its entry for
    the function, each only for variables the template declares; then SAM's own variables."""
    env = pipeline.template.function_environment(logical_id)
    for overrides in (config.get("Parameters", {}), config.get(logical_id, {})):
        env.update({key: str(value) for key, value in overrides.items() if key in env})
    props = pipeline.template.declared_properties(logical_id)
    env.update(
        {
            "AWS_SAM_LOCAL": "true",
            "AWS_LAMBDA_FUNCTION_NAME": logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(props.get("MemorySize", 128)),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(props.get("Timeout", 3)),
            "AWS_LAMBDA_FUNCTION_HANDLER": str(props["Handler"]),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"aws/lambda/{logical_id}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    return env


@pytest.fixture
def stack(make_pipeline: PipelineFactory) -> tuple[LocalPipeline, WaveSpeedSimulator]:
    """A local stack whose secret holds a real-looking key, a simulator started with
    `--seed-prediction <the events' id>`, and the README's scratch bucket and queue."""
    seeded = ((SEEDED_PREDICTION, "completed"),)
    pipeline = make_pipeline(
        sim=SimulatorConfig(
            generation_seconds=0.5, processing_after_seconds=0.1, seeded_predictions=seeded
        )
    )
    assert pipeline.simulator is not None
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    secrets.put_secret_value(SecretId=pipeline.names["ApiKeySecret"], SecretString=REAL_KEY)
    pipeline.s3.create_bucket(Bucket=SCRATCH_BUCKET)
    pipeline.sqs.create_queue(QueueName=SCRATCH_QUEUE)
    return pipeline, pipeline.simulator


@pytest.fixture
def invoke(
    stack: tuple[LocalPipeline, WaveSpeedSimulator], monkeypatch: pytest.MonkeyPatch
) -> Invoke:
    """`sam local invoke <function> -e events/<event> --env-vars events/env.json`."""
    pipeline, sim = stack
    config = env_json(pipeline, sim)

    def run(logical_id: str, event_name: str) -> Any:
        environment = sam_environment(pipeline, logical_id, config)
        for name in {**config["Parameters"], **pipeline.template.function_environment(logical_id)}:
            monkeypatch.delenv(name, raising=False)
        for name in ("POLL_MIN_INTERVAL_S", "RETRY_BASE_S"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        wiring.reset()
        function = pipeline.names[logical_id]
        handler = pipeline.functions.handler(function)
        timeout = int(environment["AWS_LAMBDA_FUNCTION_TIMEOUT"])
        return handler(json.loads(shipped(event_name, sim)), LambdaContext(function, timeout))

    return run


def subscribe(pipeline: LocalPipeline) -> str:
    """A raw-delivery SQS subscriber of the notification topic."""
    url = pipeline.sqs.create_queue(QueueName="events-test-notifications")["QueueUrl"]
    arn = pipeline.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    pipeline.sns.subscribe(
        TopicArn=pipeline.names["NotificationTopic"],
        Protocol="sqs",
        Endpoint=arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    return url


def of_event_job(notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The notifications of the events' job (executions other tests started may still end)."""
    return [note for note in notes if note["job_id"] == EVENT_JOB_ID]


def drain(pipeline: LocalPipeline, url: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while messages := pipeline.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            received.append(json.loads(message["Body"]))
            pipeline.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return received


def test_submit_pays_the_simulator_once_per_record_when_invoked_with_the_sqs_job_event(
    stack: tuple[LocalPipeline, WaveSpeedSimulator], invoke: Invoke
) -> None:
    # Given the stack and the simulator as the README sets them up
    pipeline, sim = stack

    # When `sam local invoke SubmitFunction -e events/submit-sqs-job.json` runs
    result = invoke("SubmitFunction", "submit-sqs-job.json")

    # Then each of its two records is one POST at the simulator, made with the simulator's key
    # (never the secret's), and one started workflow; no record is left for redelivery
    assert result == {"batchItemFailures": []}
    assert sim.stats()["tasks_created"] == 2
    assert sim.stats()["unauthorized"] == 0
    executions = pipeline.sfn.list_executions(stateMachineArn=pipeline.names["JobStateMachine"])
    assert len(executions["executions"]) == 2
    for execution in executions["executions"]:
        stop_once_running(pipeline, execution["executionArn"])


def stop_once_running(pipeline: LocalPipeline, arn: str, timeout_s: float = 10.0) -> None:
    """Stops a workflow the submit just started, so it polls nothing after the test.

    moto lists an execution before its interpreter thread can be stopped, and then fails
    inside (AttributeError on the not-yet-created runner): wait for it, within a bound.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pipeline.sfn.stop_execution(executionArn=arn)
            return
        except AttributeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_submit_queues_the_files_jobs_unpaid_when_invoked_with_the_s3_upload_event(
    stack: tuple[LocalPipeline, WaveSpeedSimulator], invoke: Invoke
) -> None:
    # Given examples/prompts.jsonl copied to the key the event names, as the README's
    # `aws s3 cp` does (two valid lines, one asking for a 7 s video), and a subscriber
    pipeline, sim = stack
    example = ROOT / "examples" / "prompts.jsonl"
    body = example.read_bytes()
    pipeline.s3.put_object(Bucket=SCRATCH_BUCKET, Key="prompts/prompts.jsonl", Body=body)
    notifications = subscribe(pipeline)

    # When `sam local invoke SubmitFunction -e events/submit-s3-prompt-upload.json` runs
    result = invoke("SubmitFunction", "submit-s3-prompt-upload.json")

    # Then each valid line is one job message on the scratch queue, the invalid one is a
    # rejected notification naming the file, and nothing is paid
    assert result == {"batchItemFailures": []}
    queue = pipeline.sqs.get_queue_url(QueueName=SCRATCH_QUEUE)["QueueUrl"]
    queued = drain(pipeline, queue)
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    valid = [line["prompt"] for line in lines if line.get("duration", 5) in (5, 10)]
    assert sorted(job["prompt"] for job in queued) == sorted(valid)
    notes = drain(pipeline, notifications)
    [rejected] = [note for note in notes if note["status"] == "rejected"]
    assert rejected["status"] == "rejected"
    assert "prompts/prompts.jsonl" in json.dumps(rejected)
    assert sim.stats()["tasks_created"] == 0


def test_poll_decides_completed_when_invoked_with_the_poll_event(invoke: Invoke) -> None:
    # Given the simulator started with the events' prediction seeded
    # When `sam local invoke PollFunction -e events/poll.json` runs
    result = invoke("PollFunction", "poll.json")

    # Then the workflow is told the generation is done, with its one output
    assert result["status"] == "completed"
    assert len(result["outputs"]) == 1
    assert SEEDED_PREDICTION in result["outputs"][0]


def test_finalize_stores_the_video_and_notifies_when_invoked_with_the_store_event(
    stack: tuple[LocalPipeline, WaveSpeedSimulator], invoke: Invoke
) -> None:
    # Given a subscriber of the notification topic
    pipeline, sim = stack
    notifications = subscribe(pipeline)

    # When `sam local invoke FinalizeFunction -e events/finalize-store.json` runs
    invoke("FinalizeFunction", "finalize-store.json")

    # Then the simulator's video is in the videos bucket, byte for byte, and one completed
    # notification names it
    [note] = of_event_job(drain(pipeline, notifications))
    assert note["status"] == "completed"
    [output] = note["outputs"]
    stored = pipeline.s3.get_object(Bucket=output["bucket"], Key=output["key"])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == sim.output_sha256(SEEDED_PREDICTION)


def test_finalize_notifies_the_failure_when_invoked_with_the_failure_event(
    stack: tuple[LocalPipeline, WaveSpeedSimulator], invoke: Invoke
) -> None:
    # Given a subscriber of the notification topic
    pipeline, _ = stack
    notifications = subscribe(pipeline)

    # When `sam local invoke FinalizeFunction -e events/finalize-failure.json` runs
    invoke("FinalizeFunction", "finalize-failure.json")

    # Then one failed notification says why
    [note] = of_event_job(drain(pipeline, notifications))
    assert note["status"] == "failed"
    assert note["error"]["code"]


def test_local_only_settings_are_ignored_when_running_as_a_deployed_function() -> None:
    # Given env.json's local-only values inside a function AWS runs (no AWS_SAM_LOCAL)
    config = json.loads((EVENTS / "env.json").read_text())["Parameters"]
    env = {**config, "AWS_LAMBDA_FUNCTION_NAME": "kling-SubmitFunction-abc"}

    # When the settings are read
    settings = settings_from(env)

    # Then neither plain-http output hosts nor a key from the environment are honoured
    assert settings.local_output_hosts == ()
    assert settings.api_key_override == ""


def test_local_only_settings_apply_when_run_by_sam_local_invoke() -> None:
    # Given env.json's values as `sam local invoke` passes them
    config = json.loads((EVENTS / "env.json").read_text())["Parameters"]
    env = {**config, "AWS_LAMBDA_FUNCTION_NAME": "SubmitFunction", "AWS_SAM_LOCAL": "true"}

    # When the settings are read
    settings = settings_from(env)

    # Then the simulator's address and key are used
    assert settings.local_output_hosts == (SHIPPED_SIMULATOR,)
    assert settings.api_key_override == "sim-test-key"


def test_the_secrets_key_is_used_when_the_base_is_switched_to_the_real_api() -> None:
    # Given env.json with the README's one-line switch to api.wavespeed.ai
    config = json.loads((EVENTS / "env.json").read_text())["Parameters"]
    config["WAVESPEED_API_BASE"] = "https://api.wavespeed.ai"
    env = {**config, "AWS_LAMBDA_FUNCTION_NAME": "SubmitFunction", "AWS_SAM_LOCAL": "true"}

    # When the settings are read
    settings = settings_from(env)

    # Then the simulator's key is not sent to WaveSpeed: the secret's key is
    assert settings.api_base == "https://api.wavespeed.ai"
    assert settings.api_key_override == ""


def test_the_deployed_template_calls_the_real_api_when_nothing_overrides_it(
    stack: tuple[LocalPipeline, WaveSpeedSimulator],
) -> None:
    # Given the template's own environment of every function (no env.json)
    pipeline, _ = stack
    for logical_id in ("SubmitFunction", "PollFunction", "FinalizeFunction"):
        env = pipeline.template.function_environment(logical_id)

        # When a deployed function reads it
        settings = settings_from({**env, "AWS_LAMBDA_FUNCTION_NAME": logical_id})

        # Then it calls api.wavespeed.ai with the secret's key, outputs over https only
        assert settings.api_base == "https://api.wavespeed.ai"
        assert settings.api_key_override == ""
        assert settings.local_output_hosts == ()


def test_every_shipped_event_is_covered_when_listing_events() -> None:
    # Given the events directory
    shipped_events = {path.name for path in Path(EVENTS).glob("*.json")} - {"env.json"}

    # Then each one has a test above invoking it
    assert shipped_events == {
        "submit-sqs-job.json",
        "submit-s3-prompt-upload.json",
        "poll.json",
        "finalize-store.json",
        "finalize-failure.json",
    }


def test_seed_prediction_flag_reads_id_and_status_when_given_on_the_command_line() -> None:
    # Given the README's simulator command line, plus a failed one
    from kling_local.simulator.__main__ import config_from_args, parse_args

    argv = [
        "--port",
        "8099",
        "--seed-prediction",
        SEEDED_PREDICTION,
        "--seed-prediction",
        "x:failed",
    ]

    # When it is parsed
    config = config_from_args(parse_args(argv))

    # Then both predictions are seeded, completed by default
    assert config.seeded_predictions == ((SEEDED_PREDICTION, "completed"), ("x", "failed"))


def test_seed_prediction_flag_is_refused_when_the_status_is_not_terminal() -> None:
    # Given a status a seeded prediction cannot have
    from kling_local.simulator.__main__ import parse_args

    # When it is parsed, Then argparse refuses it
    with pytest.raises(SystemExit):
        parse_args(["--seed-prediction", "abc:processing"])
