"""The money guarantees: one job id costs at most one task and gets exactly one terminal outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError

from kling_local.pipeline import LocalPipeline, RunResult
from kling_pipeline import clients, wiring
from kling_pipeline.errors import TransientError
from kling_pipeline.job.request import message_job_id, parse_message_body
from kling_pipeline.notify import Notifier
from kling_pipeline.settings import load_settings
from kling_pipeline.submit.admission import Admission
from kling_pipeline.submit.aws import StepFunctionsWorkflows
from tests.conftest import PipelineFactory, run, simulator_of

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef
    from mypy_boto3_stepfunctions import SFNClient


def statuses(result: RunResult) -> dict[str, list[str]]:
    return {job: [n["status"] for n in notes] for job, notes in result.by_job().items()}


def attribute(message: dict[str, Any], name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    return None if value is None else str(value["StringValue"])


def executions_named(pipeline: LocalPipeline, name: str) -> list[dict[str, Any]]:
    answer = pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)
    return [dict(e) for e in answer["executions"] if e["name"] == name]


class _Sfn:
    """A Step Functions client whose start_execution misbehaves once, the way a crash would."""

    def __init__(self, real: SFNClient, *, start_first: bool, error: Exception) -> None:
        self._real = real
        self._start_first = start_first
        self._error = error

    def start_execution(self, **kwargs: Any) -> Any:
        if self._start_first:
            self._real.start_execution(**kwargs)
        raise self._error


class _Sns:
    """An SNS client that throttles the first `failures` publishes, then delivers."""

    def __init__(self, real: SNSClient, failures: int) -> None:
        self._real = real
        self.failures = failures

    def publish(self, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "Publish")
        return self._real.publish(**kwargs)


def redrive_dead_letters(pipeline: LocalPipeline) -> int:
    """Moves every DLQ message back to the job queue with its attributes, as a redrive does."""
    moved = 0
    for message in pipeline.dead_letters():
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
            for name, value in message.get("MessageAttributes", {}).items()
        }
        pipeline.sqs.send_message(
            QueueUrl=pipeline.job_queue_url,
            MessageBody=message["Body"],
            MessageAttributes=attributes,
        )
        pipeline.sqs.delete_message(
            QueueUrl=pipeline.dlq_url, ReceiptHandle=message["ReceiptHandle"]
        )
        moved += 1
    return moved


def admission_with(sfn: _Sfn) -> Admission:
    """The submit function's admission step, but with the given Step Functions client."""
    settings = load_settings()
    return Admission(
        settings,
        ledger=wiring.ledger(),
        api=clients.wavespeed(),
        workflows=StepFunctionsWorkflows(cast("SFNClient", sfn), settings.state_machine_arn),
    )


def notifier_with(monkeypatch: pytest.MonkeyPatch, sns: _Sns) -> None:
    """Every function of the pipeline publishes through `sns` from now on."""
    flaky = Notifier(cast("SNSClient", sns), load_settings().topic_arn, wiring.ledger())
    monkeypatch.setattr(wiring, "notifier", lambda: flaky)


# ------------------------------------------------------------------------------ duplicates


def test_one_task_is_paid_when_the_same_job_arrives_twice_in_one_batch(
    pipeline: LocalPipeline,
) -> None:
    # Given the same job message (same job_id) queued twice, so both land in one batch
    body = json.dumps({"prompt": "A koi pond at dawn", "job_id": "koi-1"})
    pipeline.sqs.send_message_batch(
        QueueUrl=pipeline.job_queue_url,
        Entries=[{"Id": "a", "MessageBody": body}, {"Id": "b", "MessageBody": body}],
    )

    # When the pipeline runs
    result = run(pipeline)

    # Then one task was created and one completed notification sent; nothing is parked
    assert simulator_of(pipeline).stats()["tasks_created"] == 1
    assert simulator_of(pipeline).stats()["submit_requests"] == 1
    assert statuses(result) == {"koi-1": ["completed"]}
    assert pipeline.dead_letters() == []


def test_one_task_is_paid_when_the_same_job_arrives_again_in_a_later_batch(
    pipeline: LocalPipeline,
) -> None:
    # Given a job that already completed
    body = json.dumps({"prompt": "A koi pond at dusk", "job_id": "koi-2"})
    pipeline.send_message(body)
    first = run(pipeline)
    assert statuses(first) == {"koi-2": ["completed"]}

    # When the same message is delivered again
    pipeline.send_message(body)
    second = run(pipeline)

    # Then no second task and no second notification; the duplicate is dropped, not parked
    assert simulator_of(pipeline).stats()["tasks_created"] == 1
    assert statuses(second) == {"koi-2": ["completed"]}
    assert pipeline.dead_letters() == []


def test_one_rejection_is_sent_when_the_same_invalid_job_arrives_twice_in_one_batch(
    pipeline: LocalPipeline,
) -> None:
    # Given the same invalid job message queued twice, so both land in one batch
    body = json.dumps({"prompt": "A ten-second take", "duration": 7, "job_id": "twice-bad"})
    pipeline.sqs.send_message_batch(
        QueueUrl=pipeline.job_queue_url,
        Entries=[{"Id": "a", "MessageBody": body}, {"Id": "b", "MessageBody": body}],
    )

    # When the pipeline runs
    result = run(pipeline)

    # Then the job is rejected once and parked once, saying why
    assert statuses(result) == {"twice-bad": ["rejected"]}
    [parked] = pipeline.dead_letters()
    assert attribute(parked, "error_code") == "invalid_job"
    assert "duration" in (attribute(parked, "reason") or "")
    assert simulator_of(pipeline).stats()["submit_requests"] == 0


def test_one_task_per_line_when_s3_delivers_the_upload_event_twice(
    pipeline: LocalPipeline,
) -> None:
    # Given a prompt file upload, and the S3 event it produced read off the queue
    lines = [b'{"prompt": "A glass city"}', b'{"prompt": "A paper city", "duration": 3}']
    lines.append(b'{"prompt": "A paper city"}')
    pipeline.upload("dupe.jsonl", b"\n".join(lines))
    queued = pipeline.sqs.receive_message(
        QueueUrl=pipeline.job_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )["Messages"]
    # (moto also queues the s3:TestEvent it sends when the notification is configured)
    [event] = [m for m in queued if '"aws:s3"' in m["Body"]]

    # When S3 delivers the same event a second time
    pipeline.send_message(event["Body"])
    result = run(pipeline)

    # Then each line had one outcome: two tasks, two completed, one rejected notification
    assert simulator_of(pipeline).stats()["tasks_created"] == 2
    outcomes = sorted((n["source"]["line"], n["status"]) for n in result.notifications)
    assert outcomes == [(1, "completed"), (2, "rejected"), (3, "completed")]


def test_one_task_per_line_when_an_event_with_the_same_sequencer_is_redelivered(
    pipeline: LocalPipeline,
) -> None:
    # Given a prompt file in the bucket and a production-shaped S3 event for it, with sequencer
    key = "prompts/seq.jsonl"
    put = pipeline.s3.put_object(
        Bucket=pipeline.prompts_bucket, Key=key, Body=b'{"prompt": "A bay"}\n'
    )
    etag = put["ETag"].strip('"')
    pipeline.sqs.purge_queue(QueueUrl=pipeline.job_queue_url)  # the event moto sent for it
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": pipeline.prompts_bucket},
            "object": {"key": key, "size": 20, "eTag": etag, "sequencer": "0067432D1C9A2B3C4D"},
        },
    }
    body = json.dumps({"Records": [record]})

    # When the event is delivered twice, in separate batches
    pipeline.send_message(body)
    run(pipeline)
    pipeline.send_message(body)
    result = run(pipeline)

    # Then the file's one job ran once
    assert simulator_of(pipeline).stats()["tasks_created"] == 1
    assert [n["status"] for n in result.notifications] == ["completed"]


# ------------------------------------------------------------------------------ crashes


def test_stored_prediction_is_resumed_when_the_workflow_did_not_start_after_the_post(
    pipeline: LocalPipeline,
) -> None:
    # Given a submission whose paid POST succeeded but whose workflow could not be started
    body = json.dumps({"prompt": "A lantern festival", "job_id": "lantern-1"})
    outage = ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "Start")
    sfn = _Sfn(pipeline.sfn, start_first=False, error=outage)
    job = parse_message_body(body).identified("lantern-1")
    with pytest.raises(TransientError):
        admission_with(sfn).admit(job, {"type": "sqs", "message_id": "first-delivery"})
    [task] = simulator_of(pipeline).tasks()
    assert pipeline.job_states() == {"lantern-1": "submitted"}
    assert executions_named(pipeline, "lantern-1") == []

    # When the message is delivered again
    pipeline.send_message(body)
    result = run(pipeline)

    # Then no second POST: the workflow started with the stored prediction id and completed
    stats = simulator_of(pipeline).stats()
    assert (stats["tasks_created"], stats["submit_requests"]) == (1, 1)
    [execution] = executions_named(pipeline, "lantern-1")
    described = pipeline.sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"])["prediction"]["id"] == task["id"]
    assert statuses(result) == {"lantern-1": ["completed"]}
    assert result.notifications[0]["request_id"] == task["id"]


def test_redelivery_succeeds_when_the_workflow_already_exists(pipeline: LocalPipeline) -> None:
    # Given a submission that crashed right after starting its workflow, before recording it
    body = json.dumps({"prompt": "A comet over the alps", "job_id": "comet-1"})
    sfn = _Sfn(pipeline.sfn, start_first=True, error=RuntimeError("container died"))
    job = parse_message_body(body).identified("comet-1")
    with pytest.raises(RuntimeError):
        admission_with(sfn).admit(job, {"type": "sqs", "message_id": "first-delivery"})
    [execution] = executions_named(pipeline, "comet-1")

    # When the message is delivered again (Step Functions answers ExecutionAlreadyExists)
    pipeline.send_message(body)
    result = run(pipeline)

    # Then the redelivery is accepted: one task, one workflow, one notification, nothing parked
    assert simulator_of(pipeline).stats()["tasks_created"] == 1
    assert [e["executionArn"] for e in executions_named(pipeline, "comet-1")] == [
        execution["executionArn"]
    ]
    assert statuses(result) == {"comet-1": ["completed"]}
    assert pipeline.dead_letters() == []
    record = wiring.ledger().get("comet-1")
    assert record is not None and record.execution_arn == execution["executionArn"]


def test_outcome_unknown_is_notified_once_when_the_submit_answer_is_lost(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a submit answered 500 (a task may exist) that the prediction history cannot place
    pipeline = make_pipeline(env={"RECONCILE_WAITS_S": "0"})
    pipeline.send_prompt("A lost answer [sim:500-submit]", job_id="lost-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the POST is not re-sent, the user is told once, and the message is parked with why
    stats = simulator_of(pipeline).stats()
    assert (stats["tasks_created"], stats["submit_requests"]) == (0, 1)
    assert statuses(result) == {"lost-1": ["failed"]}
    error = result.notifications[0]["error"]
    assert error["code"] == "submit_outcome_unknown"
    assert "dashboard" in error["message"]
    [parked] = pipeline.dead_letters()
    assert json.loads(parked["Body"])["job_id"] == "lost-1"
    assert attribute(parked, "error_code") == "submit_outcome_unknown"
    assert attribute(parked, "reason")


def test_parked_job_is_not_paid_again_when_the_dead_letter_queue_is_redriven(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a job without a job_id whose submit answer was lost, parked in the DLQ
    pipeline = make_pipeline(env={"RECONCILE_WAITS_S": "0"})
    pipeline.send_prompt("A lost answer, no job id [sim:500-submit]")
    first = run(pipeline)
    assert [n["error"]["code"] for n in first.notifications] == ["submit_outcome_unknown"]

    # When an operator redrives the dead-letter queue
    assert redrive_dead_letters(pipeline) == 1
    second = run(pipeline)

    # Then the redriven message is still the same job: no second POST, no second notification
    stats = simulator_of(pipeline).stats()
    assert (stats["tasks_created"], stats["submit_requests"]) == (0, 1)
    assert len(second.notifications) == 1


def test_budget_job_keeps_its_id_when_it_is_redriven_on_a_new_budget_day(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a $1.30 daily cap, and two $1.30 jobs without job ids: one runs, one is parked
    pipeline = make_pipeline(env={"DAILY_BUDGET_USD": "1.3"})
    pipeline.send_prompt("A sunrise within budget")
    pipeline.send_prompt("A sunset over budget")
    first = run(pipeline)
    [refused] = [n for n in first.notifications if n["status"] == "failed"]
    assert refused["error"]["code"] == "budget_exceeded"

    # When the next day's budget is available and the dead-letter queue is redriven
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    pipeline.dynamodb.delete_item(
        TableName=pipeline.names["JobsTable"], Key={"pk": {"S": f"budget#{today}"}}
    )
    assert redrive_dead_letters(pipeline) == 1
    second = run(pipeline)

    # Then the parked job runs under the job id its failure notification named
    assert simulator_of(pipeline).stats()["tasks_created"] == 2
    assert statuses(second)[refused["job_id"]] == ["failed", "completed"]


# ------------------------------------------------------------------------------ notifications


def test_completed_notification_arrives_once_when_the_first_publish_is_throttled(
    pipeline: LocalPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SNS throttles the first publish
    notifier_with(monkeypatch, _Sns(clients.sns(), failures=1))
    pipeline.send_prompt("A throttled announcement", job_id="throttled-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the store step is retried and the user gets exactly one completed notification
    assert statuses(result) == {"throttled-1": ["completed"]}
    assert simulator_of(pipeline).stats()["tasks_created"] == 1


def test_failed_notification_arrives_when_publishing_completed_keeps_failing(
    pipeline: LocalPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SNS refuses every publish the store step makes (1 attempt + 3 retries)
    notifier_with(monkeypatch, _Sns(clients.sns(), failures=4))
    pipeline.send_prompt("A silenced announcement", job_id="silenced-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the workflow's failure path still reports the job, once
    assert statuses(result) == {"silenced-1": ["failed"]}
    assert result.notifications[0]["error"]["code"] == "notify_failed"


# ------------------------------------------------------------------------------ refusals


def test_each_invalid_message_is_rejected_and_parked_when_mixed_with_a_valid_one(
    pipeline: LocalPipeline,
) -> None:
    # Given one batch: malformed JSON, an unknown field, a bad duration and one valid job
    bodies = {
        "bad-json": '{"prompt": "A broken brace", "job_id": "bad-json"',
        "typo": json.dumps({"prompt": "A typo", "durration": 5, "job_id": "typo"}),
        "bad-duration": json.dumps({"prompt": "Too long", "duration": 7, "job_id": "bad-duration"}),
        "good": json.dumps({"prompt": "A valid one", "job_id": "good"}),
    }
    for body in bodies.values():
        pipeline.sqs.send_message(QueueUrl=pipeline.job_queue_url, MessageBody=body)

    # When the pipeline runs
    result = run(pipeline)

    # Then each invalid message gets one rejected notification naming the field it broke
    by_job = result.by_job()
    malformed_job = message_job_id(bodies["bad-json"])  # unreadable: named after its body
    assert statuses(result) == {
        malformed_job: ["rejected"],
        "typo": ["rejected"],
        "bad-duration": ["rejected"],
        "good": ["completed"],
    }
    fields = {
        job: by_job[job][0]["error"]["field"] for job in (malformed_job, "typo", "bad-duration")
    }
    assert fields == {malformed_job: "body", "typo": "durration", "bad-duration": "duration"}
    assert "durration" in by_job["typo"][0]["error"]["message"]
    assert by_job["bad-duration"][0]["input"]["duration"] == 7
    # ... each is parked in the DLQ as sent, with the reason; the valid job was unaffected
    parked = {m["Body"]: m for m in pipeline.dead_letters()}
    assert set(parked) == {bodies["bad-json"], bodies["typo"], bodies["bad-duration"]}
    assert all(attribute(m, "reason") for m in parked.values())
    assert "duration" in (attribute(parked[bodies["bad-duration"]], "reason") or "")
    assert simulator_of(pipeline).stats()["tasks_created"] == 1


def test_job_completes_with_one_task_when_the_first_submit_is_throttled(
    pipeline: LocalPipeline,
) -> None:
    # Given a submit the API answers with 429 once
    pipeline.send_prompt("A busy API [sim:429-once]", job_id="busy-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the job completes: the refused POST was retried and one task exists
    stats = simulator_of(pipeline).stats()
    assert stats["tasks_created"] == 1
    assert stats["submit_requests"] == 2
    assert statuses(result) == {"busy-1": ["completed"]}


def test_job_over_the_daily_budget_is_failed_and_parked_when_the_cap_is_reached(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a $2.60 daily cap and three $1.30 jobs
    pipeline = make_pipeline(env={"DAILY_BUDGET_USD": "2.6"})
    for n in range(3):
        pipeline.send_prompt(f"Budget job {n}", job_id=f"budget-{n}")

    # When the pipeline runs
    result = run(pipeline)

    # Then two complete, the third fails with budget_exceeded and is parked for redrive
    outcomes = sorted(n["status"] for n in result.notifications)
    assert outcomes == ["completed", "completed", "failed"]
    [failed] = [n for n in result.notifications if n["status"] == "failed"]
    assert failed["error"]["code"] == "budget_exceeded"
    assert failed["cost"]["wavespeed_usd"] == 0.0
    assert simulator_of(pipeline).stats()["tasks_created"] == 2
    [parked] = pipeline.dead_letters()
    assert json.loads(parked["Body"])["job_id"] == failed["job_id"]
    assert attribute(parked, "error_code") == "budget_exceeded"
    assert attribute(parked, "reason")


# ------------------------------------------------------------------------------ prompt optimizer


def test_enhanced_prompt_is_submitted_when_enhance_prompt_is_true(pipeline: LocalPipeline) -> None:
    # Given a job asking for prompt enhancement
    pipeline.send_prompt("A fox", job_id="enhanced-1", enhance_prompt=True)

    # When the pipeline runs
    result = run(pipeline)

    # Then the task ran the optimizer's prompt and the notification says so
    assert statuses(result) == {"enhanced-1": ["completed"]}
    note = result.notifications[0]
    enhancement = note["prompt_enhancement"]
    assert enhancement["status"] == "applied"
    [task] = simulator_of(pipeline).tasks()
    assert task["prompt"] == enhancement["enhanced_prompt"]
    assert task["prompt"] != "A fox" and task["prompt"].startswith("A fox")
    assert note["input"]["prompt"] == "A fox"


def test_original_prompt_is_submitted_when_the_optimizer_fails(pipeline: LocalPipeline) -> None:
    # Given a job asking for enhancement whose optimizer call fails
    prompt = "A stubborn fox [sim:optimizer-fail]"
    pipeline.send_prompt(prompt, job_id="plain-1", enhance_prompt=True)

    # When the pipeline runs
    result = run(pipeline)

    # Then the job still completes with the original prompt, and the notification says why
    assert statuses(result) == {"plain-1": ["completed"]}
    assert result.notifications[0]["prompt_enhancement"]["status"] == "failed"
    [task] = simulator_of(pipeline).tasks()
    assert task["prompt"] == prompt


# ------------------------------------------------------------------------------ retries


def test_retries_exhausted_is_notified_once_when_every_receive_fails_transiently(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a WaveSpeed endpoint that refuses every connection
    # (MaxReceiveCount at the template's minimum of 2 keeps the redelivery backoff short)
    pipeline = make_pipeline(
        env={"WAVESPEED_API_BASE": "http://127.0.0.1:9"},
        template_overrides={"MaxReceiveCount": 2},
    )
    pipeline.send_prompt("An unreachable API", job_id="unreachable-1")

    # When the pipeline runs until the queue gives up on the message
    result = run(pipeline)

    # Then the user gets exactly one failed notification and the message is in the DLQ
    assert statuses(result) == {"unreachable-1": ["failed"]}
    note = result.notifications[0]
    assert note["error"]["code"] == "retries_exhausted"
    assert "after 2 attempts" in note["error"]["message"]
    assert note["cost"]["paid"] is False
    [parked] = pipeline.dead_letters()
    assert json.loads(parked["Body"])["job_id"] == "unreachable-1"
    assert simulator_of(pipeline).stats()["submit_requests"] == 0
