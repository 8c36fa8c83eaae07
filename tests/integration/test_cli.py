"""Integration tests: the `kling-pipeline` command against the local pipeline inside moto."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from kling_cli.app import main
from kling_cli.resources import Connection, Resources, resolve_resources
from kling_local.pipeline import LocalPipeline
from tests.conftest import simulator_of


@dataclass(frozen=True)
class Run:
    """What the user sees from one command."""

    code: int
    out: str
    err: str


Cli = Callable[..., Run]


def resources_of(pipeline: LocalPipeline) -> Resources:
    """The CLI's view of the local pipeline: its moto clients and the names from template.yaml."""
    return Resources(
        queue_url=pipeline.job_queue_url,
        table=pipeline.names["JobsTable"],
        state_machine_arn=pipeline.state_machine_arn,
        prompts_bucket=pipeline.prompts_bucket,
        videos_bucket=pipeline.videos_bucket,
        sqs=pipeline.sqs,
        s3=pipeline.s3,
        dynamodb=pipeline.dynamodb,
        sfn=pipeline.sfn,
        topic_arn=pipeline.names["NotificationTopic"],
        dead_letter_queue_url=pipeline.dlq_url,
    )


def driving(pipeline: LocalPipeline) -> Callable[[float], None]:
    """The CLI's pause between checks, spent running the emulated Lambda SQS poller instead."""

    def tick(seconds: float) -> None:
        pipeline.poll_queues_once()
        time.sleep(min(seconds, 0.05))

    return tick


@pytest.fixture
def cli(pipeline: LocalPipeline, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs `kling-pipeline ARGS...` against the pipeline, its waits driving the pipeline."""
    # Setting up the bucket notification queued S3's test event: consume it, so the queue
    # holds only what a test sends.
    pipeline.poll_queues_once()
    assert queued_messages(pipeline) == 0

    def run(*argv: str, drive: bool = True) -> Run:
        capsys.readouterr()
        sleep = driving(pipeline) if drive else (lambda seconds: time.sleep(min(seconds, 0.05)))
        code = main(list(argv), resources=resources_of(pipeline), sleep=sleep)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def queued_messages(pipeline: LocalPipeline) -> int:
    attributes = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.job_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def run_job(pipeline: LocalPipeline, prompt: str, job_id: str) -> None:
    pipeline.send_prompt(prompt, job_id=job_id)
    result = pipeline.run_until_idle(timeout_s=60)
    assert job_id in result.jobs and not result.unfinished


FAST = ("--interval", "0.2", "--timeout", "60")


# ------------------------------------------------------------------------------------ submit
def test_submit_wait_prints_video_and_link_when_the_job_completes(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given a running pipeline
    # When the user submits a prompt and waits for it
    run = cli(
        "submit", "a red fox in snow", "--duration", "5", "--job-id", "fox-1", "--wait", *FAST
    )

    # Then the command exits 0 and shows where the video landed and a link to it
    assert run.code == 0, run.err
    assert "queued job fox-1" in run.out
    assert "completed fox-1" in run.out
    bucket = pipeline.videos_bucket
    assert f"video  s3://{bucket}/videos/fox-1/output-1.mp4" in run.out
    assert re.search(r"link   https://\S+output-1\.mp4\?\S+", run.out)
    # and the stored object is the video the link points at
    assert pipeline.read_object("videos/fox-1/output-1.mp4")[4:8] == b"ftyp"
    # and progress went to stderr, one line per state change
    assert "fox-1  running (waiting for the video)" in run.err


def test_submit_wait_exits_1_with_the_reason_when_generation_fails(cli: Cli) -> None:
    # Given a prompt the simulator fails on purpose
    # When the user submits it and waits
    run = cli("submit", "a lighthouse [sim:fail]", "--job-id", "lh-1", "--wait", *FAST)

    # Then the command exits 1 and says why
    assert run.code == 1
    assert "failed lh-1: generation_failed:" in run.out
    assert "link" not in run.out


def test_submit_prints_a_generated_job_id_when_none_is_given(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given no --job-id
    # When the user submits without waiting
    run = cli("submit", "a quiet harbour at dawn", "--aspect-ratio", "9:16")

    # Then a client-side job id is printed, and it is the id the queued message carries
    assert run.code == 0
    match = re.search(r"queued job (cli-[0-9a-f]{20})", run.out)
    assert match, run.out
    assert f"kling-pipeline watch {match.group(1)}" in run.out
    message = pipeline.sqs.receive_message(QueueUrl=pipeline.job_queue_url)["Messages"][0]
    body = json.loads(message["Body"])
    assert body["job_id"] == match.group(1)
    assert body["aspect_ratio"] == "9:16"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["submit", "a cat", "--guidance-scale", "2"], "guidance_scale: must be between 0 and 1"),
        (["submit", "   "], "prompt: must not be empty"),
        (["submit", "a cat", "--job-id", "no spaces please"], "job_id: must match"),
        (["submit", "a cat", "--metadata", "{not json"], "--metadata is not valid JSON"),
        (["submit", "a cat", "--metadata", "[1]"], "metadata: must be a JSON object"),
        (["submit", "a cat", "--duration", "7"], "invalid choice"),
        (["submit"], "either PROMPT or --file"),
    ],
)
def test_submit_exits_2_and_sends_nothing_when_the_job_is_invalid(
    pipeline: LocalPipeline, cli: Cli, argv: list[str], said: str
) -> None:
    # Given a job that breaks a rule of the job contract
    # When the user submits it
    run = cli(*argv)

    # Then the command exits 2 naming the problem, and nothing reached the queue
    assert run.code == 2
    assert said in run.err
    assert queued_messages(pipeline) == 0


def test_submit_wait_exits_3_when_the_job_does_not_end_in_time(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given a pipeline that is not being driven (the job stays on the queue)
    # When the user waits with a short timeout
    run = cli("submit", "a slow river", "--job-id", "slow-1", "--wait", "--interval", "0.1",
              "--timeout", "0.3", drive=False)  # fmt: skip

    # Then the command gives up with exit 3 and says how to keep following the job
    assert run.code == 3
    assert "slow-1  queued" in run.err
    assert "kling-pipeline watch slow-1" in run.err
    assert queued_messages(pipeline) == 1


# ------------------------------------------------------------------------------- prompt files
def test_submit_file_uploads_it_and_the_pipeline_completes_its_jobs(
    pipeline: LocalPipeline, cli: Cli, tmp_path: Path
) -> None:
    # Given a prompt file with one job naming its id and one without
    prompts = tmp_path / "batch.jsonl"
    lines = [{"prompt": "a paper boat in the rain", "job_id": "boat-1"}, {"prompt": "a comet"}]
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    # When the user submits the file and waits
    run = cli("submit", "--file", str(prompts), "--wait", *FAST)

    # Then it was uploaded under prompts/, the derived ids are explained, and both jobs completed
    assert run.code == 0, run.err
    key = re.search(r"^key (prompts/\S+-batch\.jsonl)$", run.out, re.MULTILINE)
    assert key, run.out
    assert (
        pipeline.read_object(key.group(1), bucket=pipeline.prompts_bucket) == prompts.read_bytes()
    )
    assert "job ids are derived per line" in run.out
    completed = re.findall(r"^completed (\S+)$", run.out, re.MULTILINE)
    assert len(completed) == 2
    assert "boat-1" in completed
    assert any(re.fullmatch(r"file-[0-9a-f]{24}-2", job_id) for job_id in completed)
    assert run.out.count("  link   https://") == 2


def test_submit_file_exits_2_and_uploads_nothing_when_a_line_is_invalid(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given the example prompt file, whose third job asks for a 7-second video
    examples = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"

    # When the user submits it
    run = cli("submit", "--file", str(examples))

    # Then the command names the line and the rule, exits 2, and the bucket stays empty
    assert run.code == 2
    assert "prompts.jsonl line 4: duration: must be 5 or 10 (seconds)" in run.err
    assert "nothing uploaded" in run.err
    assert list(pipeline.objects(pipeline.prompts_bucket)) == []


# ------------------------------------------------------------------------------------ status
def test_status_shows_the_video_and_a_link_when_the_job_completed(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given a job the pipeline completed
    run_job(pipeline, "a red fox in snow", "fox-2")

    # When the user asks for its status
    run = cli("status", "fox-2")

    # Then the state, prediction id, workflow, video location and a link are shown
    assert run.code == 0, run.err
    assert re.search(r"^state\s+completed$", run.out, re.MULTILINE)
    assert re.search(r"^prediction\s+[0-9a-f]+", run.out, re.MULTILINE)
    assert re.search(r"^workflow\s+SUCCEEDED", run.out, re.MULTILINE)
    assert f"s3://{pipeline.videos_bucket}/videos/fox-2/output-1.mp4" in run.out
    assert "  link   https://" in run.out


def test_status_shows_the_reason_when_the_job_failed(pipeline: LocalPipeline, cli: Cli) -> None:
    # Given a job whose generation failed
    run_job(pipeline, "a lighthouse [sim:cancel]", "lh-2")

    # When the user asks for its status
    run = cli("status", "lh-2")

    # Then it exits 1 with the failure reason from the workflow
    assert run.code == 1
    assert re.search(r"^state\s+failed$", run.out, re.MULTILINE)
    assert re.search(r"^error\s+generation_cancelled: ", run.out, re.MULTILINE)


def test_status_shows_the_reason_when_the_job_was_rejected(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given an invalid message sent around the CLI, rejected by the pipeline
    pipeline.send_message(json.dumps({"prompt": "a cat", "duration": 7, "job_id": "bad-1"}))
    pipeline.run_until_idle(timeout_s=30)

    # When the user asks for its status
    run = cli("status", "bad-1")

    # Then it exits 1 with the reason the message was parked in the dead-letter queue
    assert run.code == 1
    assert re.search(r"^state\s+rejected$", run.out, re.MULTILINE)
    assert "error      invalid_job: duration: must be 5 or 10 (seconds)" in run.out


def test_status_json_gives_machine_readable_output_when_asked(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given a completed job
    run_job(pipeline, "a red fox in snow", "fox-3")

    # When the user asks for its status as JSON
    run = cli("status", "fox-3", "--json")

    # Then stdout is one JSON document with the state, execution and outputs with links
    status = json.loads(run.out)
    assert run.code == 0
    assert status["state"] == "completed"
    assert status["execution"]["status"] == "SUCCEEDED"
    assert status["outputs"][0]["uri"].endswith("videos/fox-3/output-1.mp4")
    assert status["outputs"][0]["url"].startswith("https://")
    assert status["input"]["prompt"] == "a red fox in snow"
    assert status["error"] is None


def test_status_exits_1_with_a_clear_message_when_the_job_is_unknown(cli: Cli) -> None:
    # Given no job with that id
    # When the user asks for its status
    run = cli("status", "never-sent")

    # Then it says so and exits 1
    assert run.code == 1
    assert "no job 'never-sent'" in run.err
    assert run.out == ""


# -------------------------------------------------------------------------------- list, watch
def test_list_shows_jobs_newest_first_with_their_states(pipeline: LocalPipeline, cli: Cli) -> None:
    # Given a completed job, then a failed one
    run_job(pipeline, "a red fox in snow", "old-fox")
    run_job(pipeline, "a lighthouse [sim:fail]", "new-light")

    # When the user lists jobs
    run = cli("list")

    # Then both appear in a table, newest first, with state and prediction id
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0].split() == ["JOB", "ID", "STATE", "CREATED", "PREDICTION"]
    assert lines[1].split()[:2] == ["new-light", "failed"]
    assert lines[2].split()[:2] == ["old-fox", "completed"]
    assert re.fullmatch(r"[0-9a-f]{8,}", lines[2].split()[-1])


def test_list_shows_only_that_state_when_filtered(pipeline: LocalPipeline, cli: Cli) -> None:
    # Given a completed job and a failed one
    pipeline.send_prompt("a red fox in snow", job_id="fox-4")
    pipeline.send_prompt("a lighthouse [sim:fail]", job_id="lh-4")
    assert not pipeline.run_until_idle(timeout_s=60).unfinished

    # When the user lists only failed jobs
    run = cli("list", "--state", "failed")

    # Then only the failed job is shown
    assert "lh-4" in run.out
    assert "fox-4" not in run.out


def test_watch_prints_each_state_change_until_the_jobs_end(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given two queued jobs, one of which will fail
    pipeline.send_prompt("a red fox in snow", job_id="w-ok")
    pipeline.send_prompt("a lighthouse [sim:fail]", job_id="w-bad")

    # When the user watches them
    run = cli("watch", "w-ok", "w-bad", *FAST)

    # Then each job's changes appear once, in order, ending in its outcome; exit 1 (one failed)
    assert run.code == 1
    ok = [line.split("  ", 2)[2] for line in run.out.splitlines() if "  w-ok  " in line]
    assert ok[0].startswith("queued")
    assert ok[-1].startswith("completed -> s3://")
    assert "running (waiting for the video)" in ok
    assert len(ok) == len(set(ok))
    bad = [line for line in run.out.splitlines() if "  w-bad  " in line]
    assert "failed (generation_failed: " in bad[-1]
    assert run.out.splitlines()[-1] == "2 job(s): 1 completed, 1 failed"


def test_watch_follows_every_unfinished_job_when_none_is_named(
    pipeline: LocalPipeline, cli: Cli
) -> None:
    # Given a job the pipeline has picked up but not finished, and one already done
    run_job(pipeline, "a red fox in snow", "done-1")
    pipeline.send_prompt("a comet over the sea", job_id="live-1")
    pipeline.poll_queues_once()

    # When the user watches without naming jobs
    run = cli("watch", *FAST)

    # Then only the unfinished job is followed, to its end
    assert run.code == 0, run.out
    assert "done-1" not in run.out
    assert re.search(r"live-1  completed -> s3://", run.out)


def test_watch_says_so_when_nothing_is_unfinished(cli: Cli) -> None:
    # Given an idle pipeline
    # When the user watches
    run = cli("watch", *FAST)

    # Then there is nothing to follow
    assert run.code == 0
    assert run.out.strip() == "no unfinished jobs"


# --------------------------------------------------------------------------- stack resolution
def _cloudformation_in_moto() -> None:
    # moto's CloudFormation backend needs the moto[cloudformation] extra.
    pytest.importorskip("openapi_spec_validator", reason="needs moto[cloudformation]")


def test_resources_come_from_the_stack_outputs_when_only_a_stack_is_named(
    pipeline: LocalPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose Outputs name the local pipeline's resources
    _cloudformation_in_moto()
    names = resources_of(pipeline)
    outputs = {
        "JobQueueUrl": names.queue_url,
        "DeadLetterQueueUrl": names.dead_letter_queue_url,
        "PromptsBucketName": names.prompts_bucket,
        "VideosBucketName": names.videos_bucket,
        "NotificationTopicArn": names.topic_arn,
        "JobsTableName": names.table,
        "StateMachineArn": names.state_machine_arn,
    }
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cloudformation = boto3.client("cloudformation", region_name=pipeline.region)
    cloudformation.create_stack(StackName="kling-test", TemplateBody=json.dumps(template))

    # When the resources are resolved from the stack alone, and a command runs with them
    resources = resolve_resources(Connection(stack="kling-test", region=pipeline.region))
    pipeline.send_prompt("a red fox in snow", job_id="stack-1")
    pipeline.run_until_idle(timeout_s=60)
    capsys.readouterr()
    code = main(["--stack", "kling-test", "--region", pipeline.region, "status", "stack-1"])

    # Then every name comes from the Outputs and the command finds the job
    assert resources.queue_url == names.queue_url
    assert resources.table == names.table
    assert resources.state_machine_arn == names.state_machine_arn
    assert resources.dead_letter_queue_url == names.dead_letter_queue_url
    assert code == 0
    assert re.search(r"^state\s+completed$", capsys.readouterr().out, re.MULTILINE)


def test_commands_exit_1_with_a_clear_message_when_the_stack_does_not_exist(
    pipeline: LocalPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no such stack
    _cloudformation_in_moto()

    # When a command needs it
    code = main(["list", "--stack", "no-such-stack", "--region", pipeline.region])

    # Then the user is told which stack is missing and how to point elsewhere
    assert code == 1
    assert "stack 'no-such-stack' not found" in capsys.readouterr().err


def test_explicit_names_need_no_stack_when_all_are_given(
    pipeline: LocalPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a completed job and every resource name on the command line
    run_job(pipeline, "a red fox in snow", "flags-1")
    names = resources_of(pipeline)
    flags = [
        "--region", pipeline.region, "--stack", "not-deployed",
        "--queue-url", names.queue_url, "--table", names.table,
        "--state-machine-arn", names.state_machine_arn,
        "--prompts-bucket", names.prompts_bucket, "--videos-bucket", names.videos_bucket,
    ]  # fmt: skip

    # When a command runs (CloudFormation is never asked)
    capsys.readouterr()
    code = main(["list", *flags])

    # Then it works from the flags alone
    assert code == 0
    assert "flags-1" in capsys.readouterr().out


def test_restore_refuses_when_job_did_not_fail(cli: Cli, pipeline: LocalPipeline) -> None:
    # Given a job that completed
    pipeline.send_prompt("a finished fox", job_id="done-1")
    pipeline.run_until_idle(60)

    # When asking to restore it, and a job that does not exist
    done = cli("restore", "done-1")
    missing = cli("restore", "nobody")

    # Then nothing runs: only a failed job has a video to restore
    assert done.code == 1 and "only a failed job can be restored" in done.err
    assert missing.code == 1 and "no job 'nobody'" in missing.err
    assert simulator_of(pipeline).stats()["submit_requests"] == 1
