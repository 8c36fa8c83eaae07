"""Each handler invoked with its events/ file, under moto resources built from template.yaml."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import unquote_plus

import pytest

from kling_local.pipeline import LocalPipeline
from kling_local.simulator import WaveSpeedSimulator
from kling_pipeline import clients, wiring
from kling_pipeline.errors import TransientError
from kling_pipeline.job.request import message_job_id
from tests.conftest import PipelineFactory, load_event

SCHEMA = "kling-pipeline.notification/v1"
MODEL = "kwaivgi/kling-v2.0-t2v-master"
NOTIFICATION_KEYS = {
    "schema",
    "job_id",
    "status",
    "request_id",
    "model",
    "input",
    "source",
    "outputs",
    "error",
    "metadata",
    "cost",
}


def simulator_of(pipeline: LocalPipeline) -> WaveSpeedSimulator:
    assert pipeline.simulator is not None, "this pipeline runs without the simulator"
    return pipeline.simulator


def invoke(pipeline: LocalPipeline, logical_id: str, event: dict[str, Any]) -> Any:
    """Invokes a function as Lambda would; fails the test when the handler raised."""
    payload, errored, _ = pipeline.invoke(pipeline.names[logical_id], event)
    assert not errored, payload
    return json.loads(payload)


def subscribe_envelopes(pipeline: LocalPipeline) -> str:
    """An SQS subscriber without raw delivery: it sees the SNS envelope with its attributes."""
    url = pipeline.sqs.create_queue(QueueName="handler-test-subscriber")["QueueUrl"]
    arn = pipeline.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    pipeline.sns.subscribe(
        TopicArn=pipeline.names["NotificationTopic"], Protocol="sqs", Endpoint=arn
    )
    return url


def envelopes(pipeline: LocalPipeline, url: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while True:
        messages = pipeline.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return received
        for message in messages:
            received.append(json.loads(message["Body"]))
            pipeline.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def create_task(prompt: str) -> str:
    """A real, paid simulator task, created through the pipeline's own WaveSpeed client."""
    return clients.wavespeed().submit_generation(
        {"prompt": prompt, "aspect_ratio": "16:9", "duration": 5}
    )


def wait_for_status(pipeline: LocalPipeline, task_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        [task] = [t for t in simulator_of(pipeline).tasks() if t["id"] == task_id]
        if task["status"] == status:
            return task
        time.sleep(0.05)
    raise AssertionError(f"simulator task {task_id} never reached {status}")


def s3_upload_event(
    pipeline: LocalPipeline, data: bytes | None = None, *, key: str | None = None
) -> tuple[dict[str, Any], str]:
    """events/submit-s3-prompt-upload.json pointed at the moto prompts bucket, and its key.

    With `data`, the file is uploaded first to the (versioned, as deployed) bucket and the
    event names that very version, as S3 would."""
    event = load_event("submit-s3-prompt-upload.json")
    record = event["Records"][0]
    body = json.loads(record["body"])
    s3 = body["Records"][0]["s3"]
    s3["bucket"]["name"] = pipeline.prompts_bucket
    s3["bucket"]["arn"] = f"arn:aws:s3:::{pipeline.prompts_bucket}"
    if key is not None:
        s3["object"]["key"] = key
    name = unquote_plus(s3["object"]["key"])
    if data is not None:
        pipeline.s3.put_bucket_versioning(
            Bucket=pipeline.prompts_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        put = pipeline.s3.put_object(Bucket=pipeline.prompts_bucket, Key=name, Body=data)
        s3["object"].update(
            {"versionId": put["VersionId"], "eTag": put["ETag"].strip('"'), "size": len(data)}
        )
    record["body"] = json.dumps(body)
    record["eventSourceARN"] = pipeline.template.attrs["JobQueue"]["Arn"]
    return event, name


def version_of(event: dict[str, Any]) -> str:
    return str(json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"]["versionId"])


# ------------------------------------------------------------------------------ submit


def test_submit_starts_one_workflow_per_record_when_given_the_sqs_job_event(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a local pipeline (not paced to a tier: both records may start at once)
    pipeline = make_pipeline()
    # and the SQS event sam local invoke uses: a JSON job and a plain-text prompt
    event = load_event("submit-sqs-job.json")
    job_ids = [message_job_id(r["body"]) for r in event["Records"]]

    # When the submit function handles it
    answer = invoke(pipeline, "SubmitFunction", event)

    # Then no record failed and each started its workflow, named after its derived job id
    assert answer == {"batchItemFailures": []}
    listed = pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)
    assert sorted(e["name"] for e in listed["executions"]) == sorted(job_ids)
    assert simulator_of(pipeline).stats()["tasks_created"] == 2
    # ... and both workflows end in a completed notification echoing the job
    result = pipeline.run_until_idle(60)
    by_job = result.by_job()
    first = by_job[job_ids[0]]
    assert [n["status"] for n in first] == ["completed"]
    assert first[0]["metadata"] == {"campaign": "demo"}
    assert first[0]["input"]["guidance_scale"] == 0.5
    second = by_job[job_ids[1]]
    assert [n["status"] for n in second] == ["completed"]
    assert second[0]["input"]["prompt"] == event["Records"][1]["body"]


def test_submit_queues_one_job_per_line_when_given_the_s3_upload_event(
    pipeline: LocalPipeline,
) -> None:
    # Given the prompt file the S3 event names, in the moto prompts bucket
    lines = [{"prompt": "A teaser, take one"}, {"prompt": "A teaser, take two", "duration": 10}]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    event, key = s3_upload_event(pipeline, data)
    version = version_of(event)
    pipeline.sqs.purge_queue(QueueUrl=pipeline.job_queue_url)  # moto's own event for the put

    # When the submit function handles the event
    answer = invoke(pipeline, "SubmitFunction", event)

    # Then the record succeeds and each line is queued as its own job message
    assert answer == {"batchItemFailures": []}
    attributes = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.job_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "2"
    # ... which run to completed notifications naming the bucket, key and line
    result = pipeline.run_until_idle(60)
    assert result.unfinished == []
    sources = sorted(
        (n["status"], json.dumps(n["source"], sort_keys=True)) for n in result.notifications
    )
    assert sources == [
        (
            "completed",
            json.dumps(
                {
                    "bucket": pipeline.prompts_bucket,
                    "key": key,
                    "line": line,
                    "type": "s3",
                    "version_id": version,
                },
                sort_keys=True,
            ),
        )
        for line in (1, 2)
    ]
    assert simulator_of(pipeline).stats()["tasks_created"] == 2


# ------------------------------------------------------------------------------ poll


def test_poll_reports_waiting_then_completed_when_checking_a_real_prediction(
    pipeline: LocalPipeline,
) -> None:
    # Given events/poll.json pointed at a simulator task that has just been created
    task_id = create_task("A paper boat drifts down a rain-soaked street")
    event = load_event("poll.json")
    event["prediction"]["id"] = task_id

    # When the poll function checks it straight away
    waiting = invoke(pipeline, "PollFunction", event)

    # Then the workflow is told to wait again, within the schedule
    assert waiting["status"] == "waiting"
    assert waiting["polls"] == 1
    schedule = event["schedule"]
    queued = waiting["last_status"] == "created"  # still in WaveSpeed's queue: read less often
    assert waiting["wait_seconds"] == schedule["queued_interval_s" if queued else "interval_s"]

    # When it checks again after the generation finished
    wait_for_status(pipeline, task_id, "completed")
    event["poll"] = waiting
    completed = invoke(pipeline, "PollFunction", event)

    # Then it reports completed with the simulator's output URL
    assert completed["status"] == "completed"
    assert completed["polls"] == 2
    assert completed["outputs"] == [
        f"{simulator_of(pipeline).base_url}/predictions/{task_id}/1.mp4"
    ]
    assert completed["has_nsfw_contents"] == [False]


def test_poll_reports_failed_when_the_api_failed_the_prediction(pipeline: LocalPipeline) -> None:
    # Given events/poll.json pointed at a simulator task that fails
    task_id = create_task("A doomed generation [sim:fail]")
    wait_for_status(pipeline, task_id, "failed")
    event = load_event("poll.json")
    event["prediction"]["id"] = task_id

    # When the poll function checks it
    answer = invoke(pipeline, "PollFunction", event)

    # Then the workflow is told the generation failed, with the API's message
    assert answer["status"] == "failed"
    assert answer["error"]["code"] == "generation_failed"
    assert "[sim:fail]" in answer["error"]["message"]


# ------------------------------------------------------------------------------ finalize


def test_finalize_stores_video_and_sidecar_and_publishes_when_the_action_is_store(
    pipeline: LocalPipeline,
) -> None:
    # Given events/finalize-store.json pointed at a finished simulator task's output
    task_id = create_task("A paper boat drifts down a rain-soaked street")
    task = wait_for_status(pipeline, task_id, "completed")
    event = load_event("finalize-store.json")
    event["prediction"]["id"] = task_id
    event["poll"]["outputs"] = task["outputs"]
    job_id = event["job"]["job_id"]
    subscriber = subscribe_envelopes(pipeline)

    # When the finalize function stores it
    answer = invoke(pipeline, "FinalizeFunction", event)

    # Then the video is in the videos bucket byte for byte
    key = f"videos/{job_id}/output-1.mp4"
    assert answer["status"] == "stored"
    assert answer["outputs"] == [f"s3://{pipeline.videos_bucket}/{key}"]
    data = pipeline.read_object(key)
    digest = hashlib.sha256(data).hexdigest()
    assert digest == simulator_of(pipeline).output_sha256(task_id, 0)
    assert answer["bytes"] == len(data)
    # ... with a job.json sidecar describing it
    sidecar = json.loads(pipeline.read_object(f"videos/{job_id}/job.json"))
    assert sidecar["request_id"] == task_id
    assert sidecar["outputs"][0]["sha256"] == digest
    assert sidecar["source"] == event["job"]["source"]
    # ... and one completed notification was published with its filter attributes
    [envelope] = envelopes(pipeline, subscriber)
    note = json.loads(envelope["Message"])
    assert set(note) >= NOTIFICATION_KEYS
    assert (note["schema"], note["status"], note["job_id"]) == (SCHEMA, "completed", job_id)
    assert note["outputs"][0]["sha256"] == digest
    assert note["outputs"][0]["size"] == len(data)
    assert envelope["MessageAttributes"]["status"]["Value"] == "completed"
    assert envelope["MessageAttributes"]["job_id"]["Value"] == job_id


def test_finalize_publishes_one_contract_notification_when_the_action_is_fail(
    pipeline: LocalPipeline,
) -> None:
    # Given events/finalize-failure.json and a subscriber that sees SNS envelopes
    event = load_event("finalize-failure.json")
    subscriber = subscribe_envelopes(pipeline)

    # When the finalize function handles it twice (a Step Functions retry)
    first = invoke(pipeline, "FinalizeFunction", event)
    second = invoke(pipeline, "FinalizeFunction", event)

    # Then exactly one failed notification was published
    assert first["notified"] is True
    assert second["notified"] is False
    [envelope] = envelopes(pipeline, subscriber)
    # ... carrying every field of CONTRACT section 5
    note = json.loads(envelope["Message"])
    assert set(note) >= NOTIFICATION_KEYS
    assert note["schema"] == SCHEMA
    assert note["job_id"] == "demo-job-0001"
    assert note["status"] == "failed"
    assert note["request_id"] == event["prediction"]["id"]
    assert note["model"] == MODEL
    assert note["input"] == event["job"]["input"]
    assert note["source"] == {"type": "sqs", "message_id": event["job"]["source"]["message_id"]}
    assert note["outputs"] == []
    assert note["error"] == {"code": "generation_failed", "message": "content policy violation"}
    assert note["metadata"] == {"campaign": "demo"}
    assert note["cost"]["wavespeed_usd"] == pytest.approx(1.30)
    # ... and the attributes subscribers filter on
    attributes = envelope["MessageAttributes"]
    assert attributes["status"] == {"Type": "String", "Value": "failed"}
    assert attributes["job_id"] == {"Type": "String", "Value": "demo-job-0001"}


def test_finalize_reports_the_store_error_when_an_output_could_not_be_stored(
    pipeline: LocalPipeline,
) -> None:
    # Given the failure event after "Store video and notify" returned a failed delivery
    event = load_event("finalize-failure.json")
    event["poll"] = {"status": "completed", "polls": 3}
    event["delivery"] = {
        "status": "failed",
        "outputs": [],
        "bytes": 0,
        "error": {"code": "not_mp4", "message": "output is not an MP4"},
    }
    subscriber = subscribe_envelopes(pipeline)

    # When the finalize function handles it
    invoke(pipeline, "FinalizeFunction", event)

    # Then the notification carries the store step's error code
    [envelope] = envelopes(pipeline, subscriber)
    note = json.loads(envelope["Message"])
    assert note["status"] == "failed"
    assert note["error"] == {"code": "not_mp4", "message": "output is not an MP4"}


@pytest.mark.parametrize(
    ("caught", "code", "words"),
    [
        (
            {
                "Error": "TransientError",
                "Cause": json.dumps(
                    {
                        "errorType": "TransientError",
                        "errorMessage": str(
                            TransientError("SNS refused the publish", code="notify_failed")
                        ),
                    }
                ),
            },
            "notify_failed",
            "SNS refused the publish",
        ),
        ({"Error": "States.Timeout", "Cause": ""}, "task_timeout", "timed out"),
        (
            {
                "Error": "KeyError",
                "Cause": json.dumps({"errorType": "KeyError", "errorMessage": "'outputs'"}),
            },
            "task_failed",
            "KeyError: 'outputs'",
        ),
    ],
)
def test_finalize_reports_a_code_for_the_caught_error_when_a_task_crashed_or_gave_up(
    pipeline: LocalPipeline, caught: dict[str, Any], code: str, words: str
) -> None:
    # Given the failure event as a Catch shapes it: retries exhausted, a timeout, a crash
    event = load_event("finalize-failure.json")
    event["poll"] = {"status": "completed", "polls": 3}
    event["error"] = caught
    subscriber = subscribe_envelopes(pipeline)

    # When the finalize function handles it
    invoke(pipeline, "FinalizeFunction", event)

    # Then the notification names the error's own code, or a generic one for a crash
    [envelope] = envelopes(pipeline, subscriber)
    note = json.loads(envelope["Message"])
    assert note["status"] == "failed"
    assert note["error"]["code"] == code
    assert words in note["error"]["message"]


def test_finalize_asks_for_a_retry_when_another_attempt_holds_the_notification(
    pipeline: LocalPipeline,
) -> None:
    # Given an earlier attempt that claimed the job's notification and may be publishing it
    event = load_event("finalize-failure.json")
    wiring.ledger().claim_terminal("demo-job-0001", "failed")
    subscriber = subscribe_envelopes(pipeline)

    # When the finalize function handles the failure
    payload, errored, _ = pipeline.invoke(pipeline.names["FinalizeFunction"], event)

    # Then it fails with the error the state machine retries, and publishes nothing
    assert errored
    assert json.loads(payload)["errorType"] == "TransientError"
    assert json.loads(json.loads(payload)["errorMessage"])["code"] == "notify_in_progress"
    assert envelopes(pipeline, subscriber) == []


def test_finalize_publishes_when_an_earlier_attempt_crashed_before_publishing(
    pipeline: LocalPipeline,
) -> None:
    # Given an earlier attempt that claimed the notification, then died (its lease ran out)
    event = load_event("finalize-failure.json")
    wiring.ledger().claim_terminal("demo-job-0001", "completed", lease_s=-1)
    subscriber = subscribe_envelopes(pipeline)

    # When the finalize function handles the failure
    answer = invoke(pipeline, "FinalizeFunction", event)

    # Then the failure is published, once
    assert answer["notified"] is True
    [envelope] = envelopes(pipeline, subscriber)
    assert json.loads(envelope["Message"])["status"] == "failed"


def test_each_upload_runs_its_own_lines_once_when_two_versions_land_before_either_is_read(
    pipeline: LocalPipeline,
) -> None:
    # Given two uploads to one key in a versioned bucket, both before any event is handled
    key = "prompts/same-name.jsonl"
    first, _ = s3_upload_event(pipeline, b'{"prompt": "Version one, a heron"}\n', key=key)
    second, _ = s3_upload_event(pipeline, b'{"prompt": "Version two, a kingfisher"}\n', key=key)
    pipeline.sqs.purge_queue(QueueUrl=pipeline.job_queue_url)  # moto's own events

    # When both events are handled, and the first one is delivered once more
    for event in (first, second, first):
        assert invoke(pipeline, "SubmitFunction", event) == {"batchItemFailures": []}
    result = pipeline.run_until_idle(60)

    # Then each version's line was paid once, under a job of its own, with its own prompt
    prompts = sorted(task["prompt"] for task in simulator_of(pipeline).tasks())
    assert prompts == ["Version one, a heron", "Version two, a kingfisher"]
    completed = {n["job_id"]: n["input"]["prompt"] for n in result.notifications}
    assert sorted(completed.values()) == prompts and len(completed) == 2
    versions = {n["source"]["version_id"] for n in result.notifications}
    assert versions == {version_of(first), version_of(second)}


def test_forged_event_is_refused_with_a_reason_when_it_names_a_version_that_does_not_exist(
    pipeline: LocalPipeline,
) -> None:
    # Given a real upload, and an event for its key naming a version S3 never made
    event, key = s3_upload_event(pipeline, b'{"prompt": "A real line"}\n')
    pipeline.sqs.purge_queue(QueueUrl=pipeline.job_queue_url)
    body = json.loads(event["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["versionId"] = "forged-version-0001"
    event["Records"][0]["body"] = json.dumps(body)

    # When the forged event is handled
    invoke(pipeline, "SubmitFunction", event)
    result = pipeline.run_until_idle(30)

    # Then nothing is paid; one rejection says why; the event is parked with the reason
    assert simulator_of(pipeline).stats()["tasks_created"] == 0
    [note] = result.notifications
    assert note["status"] == "rejected" and "no such file or version" in note["error"]["message"]
    parked = pipeline.sqs.receive_message(QueueUrl=pipeline.dlq_url, MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert "no such file or version" in parked[0]["MessageAttributes"]["reason"]["StringValue"]


class _ShortContext:
    """A Lambda context with only `seconds` of the invocation left."""

    function_name = "kling-local-SubmitFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:submit"
    aws_request_id = "short-context"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_submit_leaves_records_for_redelivery_when_the_invocation_is_nearly_over(
    pipeline: LocalPipeline,
) -> None:
    # Given the SQS job event, handled by an invocation with 10 s left
    event = load_event("submit-sqs-job.json")
    handler = pipeline.functions.handler(pipeline.names["SubmitFunction"])

    # When the submit function handles it
    answer = handler(event, _ShortContext(10.0))

    # Then no paid POST was started, nothing was claimed, and every record is left for SQS
    assert simulator_of(pipeline).stats()["submit_requests"] == 0
    assert pipeline.job_states() == {}
    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    assert failed == {r["messageId"] for r in event["Records"]}
