"""End-to-end acceptance: job messages and prompt files through the real workflow to S3 + SNS."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kling_local.pipeline import LocalPipeline, RunResult
from kling_local.simulator import SimulatorConfig
from tests.conftest import PipelineFactory, run, simulator_of

SCHEMA = "kling-pipeline.notification/v1"


def only_notification(result: RunResult, job_id: str) -> dict[str, Any]:
    notes = result.by_job().get(job_id, [])
    assert len(notes) == 1, f"job {job_id} got {len(notes)} notifications: {notes}"
    return notes[0]


def keys_under(pipeline: LocalPipeline, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in pipeline.objects() if o["Key"].startswith(prefix))


def assert_stored_output(
    pipeline: LocalPipeline, output: dict[str, Any], task_id: str, n: int
) -> None:
    data = pipeline.read_object(output["key"])
    digest = hashlib.sha256(data).hexdigest()
    assert digest == simulator_of(pipeline).output_sha256(task_id, n)
    assert output["sha256"] == digest
    assert output["size"] == len(data)
    assert output["bucket"] == pipeline.videos_bucket
    assert output["uri"] == f"s3://{pipeline.videos_bucket}/{output['key']}"
    assert output["content_type"] == "video/mp4"


# ------------------------------------------------------------------------------ happy paths


def test_prompt_is_delivered_as_one_completed_notification_with_matching_video(
    pipeline: LocalPipeline,
) -> None:
    # Given a job message with a prompt and metadata
    pipeline.send_prompt("A red fox trots across a snowy meadow", job_id="fox-1", metadata={"a": 1})

    # When the pipeline runs to idle
    result = run(pipeline)

    # Then exactly one completed notification arrives for the job
    assert len(result.notifications) == 1
    note = only_notification(result, "fox-1")
    assert note["schema"] == SCHEMA
    assert note["status"] == "completed"
    assert note["error"] is None
    assert note["metadata"] == {"a": 1}
    assert note["source"]["type"] == "sqs"
    assert note["input"]["prompt"] == "A red fox trots across a snowy meadow"
    # ... naming the one paid task, whose output is the S3 object byte for byte
    [task] = simulator_of(pipeline).tasks()
    assert note["request_id"] == task["id"]
    [output] = note["outputs"]
    assert output["key"] == "videos/fox-1/output-1.mp4"
    assert_stored_output(pipeline, output, task["id"], 0)
    assert output["url"].startswith("https://")
    assert note["cost"]["wavespeed_usd"] == 1.3
    # ... next to its job.json sidecar
    sidecar = json.loads(pipeline.read_object("videos/fox-1/job.json"))
    assert sidecar["request_id"] == task["id"]
    assert sidecar["outputs"][0]["sha256"] == output["sha256"]


def test_generation_failure_is_notified_once_when_the_api_fails_the_task(
    pipeline: LocalPipeline,
) -> None:
    # Given a prompt the simulator fails
    pipeline.send_prompt("A storm at sea [sim:fail]", job_id="storm-1")

    # When the pipeline runs to idle
    result = run(pipeline)

    # Then exactly one failed notification arrives, with the API's error, and nothing is stored
    assert len(result.notifications) == 1
    note = only_notification(result, "storm-1")
    assert note["status"] == "failed"
    assert note["error"]["code"] == "generation_failed"
    assert "[sim:fail]" in note["error"]["message"]
    assert note["outputs"] == []
    assert note["request_id"] == simulator_of(pipeline).tasks()[0]["id"]
    assert keys_under(pipeline, "videos/storm-1/") == []


def test_text_prompt_file_completes_when_uploaded_under_prompts(pipeline: LocalPipeline) -> None:
    # Given a .txt prompt file
    # (named with a space, which S3 events carry URL-encoded)
    key = pipeline.upload("light house.txt", b"A lighthouse in a storm, slow aerial orbit\n")

    # When it is uploaded and the pipeline runs
    result = run(pipeline)

    # Then one completed notification names the bucket and key it came from
    assert len(result.notifications) == 1
    note = result.notifications[0]
    assert note["status"] == "completed"
    assert note["source"]["type"] == "s3"
    assert note["source"]["bucket"] == pipeline.prompts_bucket
    assert note["source"]["key"] == key
    assert note["input"]["prompt"] == "A lighthouse in a storm, slow aerial orbit"
    [task] = simulator_of(pipeline).tasks()
    assert_stored_output(pipeline, note["outputs"][0], task["id"], 0)


def test_two_uploads_of_one_key_each_run_their_own_lines_once_when_uploaded_back_to_back(
    pipeline: LocalPipeline,
) -> None:
    # Given two different files uploaded to the same key before either is read (as `aws s3 cp`
    # of an edited file twice, or the runner's --upload of two files with one name)
    pipeline.upload("batch.jsonl", b'{"prompt": "first version, line one"}\n')
    pipeline.upload(
        "batch.jsonl",
        b'{"prompt": "second version, line one"}\n{"prompt": "second version, line two"}\n',
    )

    # When the pipeline runs
    result = run(pipeline)

    # Then each version's lines ran exactly once, under job ids of their own, each notified
    # with its own prompt (version 1 is not lost, version 2 is not paid twice)
    prompts = sorted(n["input"]["prompt"] for n in result.notifications)
    assert prompts == [
        "first version, line one",
        "second version, line one",
        "second version, line two",
    ]
    assert {n["status"] for n in result.notifications} == {"completed"}
    assert len({n["job_id"] for n in result.notifications}) == 3
    assert simulator_of(pipeline).stats()["tasks_created"] == 3
    # ... and each names the object version it was read at, as a real S3 event names it
    versions = {
        n["input"]["prompt"][:6]: n["source"].get("version_id") for n in result.notifications
    }
    assert versions["first "] and versions["second"] and versions["first "] != versions["second"]


def test_jsonl_prompt_file_runs_valid_lines_and_rejects_the_invalid_line(
    pipeline: LocalPipeline,
) -> None:
    # Given a .jsonl file whose second line breaks the duration rule
    lines = [
        json.dumps({"prompt": "A paper boat on a rainy street", "metadata": {"n": 1}}),
        json.dumps({"prompt": "A ten-second waterfall", "duration": 7}),
        "",
        json.dumps({"prompt": "A hummingbird in slow motion", "aspect_ratio": "9:16"}),
    ]
    key = pipeline.upload("batch.jsonl", "\n".join(lines).encode())

    # When the pipeline runs
    result = run(pipeline)

    # Then the two valid lines complete and the invalid one is rejected, naming file and line
    by_status: dict[str, list[dict[str, Any]]] = {}
    for note in result.notifications:
        by_status.setdefault(note["status"], []).append(note)
    assert sorted(by_status) == ["completed", "rejected"]
    assert len(by_status["completed"]) == 2
    assert {n["source"]["line"] for n in by_status["completed"]} == {1, 4}
    assert all(n["source"]["key"] == key for n in by_status["completed"])
    [rejected] = by_status["rejected"]
    assert rejected["source"] == {
        "type": "s3",
        "bucket": pipeline.prompts_bucket,
        "key": key,
        "version_id": rejected["source"]["version_id"],  # the version this upload created
        "line": 2,
    }
    assert rejected["source"]["version_id"]
    assert rejected["error"]["field"] == "duration"
    assert f"{key} line 2" in rejected["error"]["message"]
    assert rejected["request_id"] is None
    # ... and only the valid lines were paid for
    assert simulator_of(pipeline).stats()["tasks_created"] == 2
    assert len({n["job_id"] for n in result.notifications}) == 3


def test_terminal_api_status_fails_the_job_when_cancelled_or_timed_out(
    pipeline: LocalPipeline,
) -> None:
    # Given one generation the API cancels and one it times out
    pipeline.send_prompt("A cat [sim:cancel]", job_id="cancelled-1")
    pipeline.send_prompt("A dog [sim:timeout]", job_id="timeout-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then each job gets one failed notification whose code names the API's status
    cancelled = only_notification(result, "cancelled-1")
    timed_out = only_notification(result, "timeout-1")
    assert (cancelled["status"], cancelled["error"]["code"]) == ("failed", "generation_cancelled")
    assert (timed_out["status"], timed_out["error"]["code"]) == ("failed", "generation_timeout")
    assert len(result.notifications) == 2


def test_flagged_video_is_quarantined_without_a_link_when_the_api_marks_it_nsfw(
    pipeline: LocalPipeline,
) -> None:
    # Given a generation the API flags as NSFW
    pipeline.send_prompt("Something questionable [sim:nsfw]", job_id="flagged-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the job completes, its video lies under quarantine/ and no presigned link is handed out
    note = only_notification(result, "flagged-1")
    assert note["status"] == "completed"
    [output] = note["outputs"]
    assert output["key"] == "quarantine/flagged-1/output-1.mp4"
    assert "url" not in output
    assert output["nsfw"] is True
    assert note["has_nsfw_contents"] is True
    [task] = simulator_of(pipeline).tasks()
    assert_stored_output(pipeline, output, task["id"], 0)
    assert keys_under(pipeline, "videos/flagged-1/") == ["videos/flagged-1/job.json"]


def test_every_output_is_stored_when_the_api_returns_two_videos(pipeline: LocalPipeline) -> None:
    # Given a generation that yields two outputs
    pipeline.send_prompt("Twin suns over a desert [sim:two-outputs]", job_id="twins-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then both videos are stored and listed, each matching its simulator output
    note = only_notification(result, "twins-1")
    assert note["status"] == "completed"
    [task] = simulator_of(pipeline).tasks()
    assert [o["key"] for o in note["outputs"]] == [
        "videos/twins-1/output-1.mp4",
        "videos/twins-1/output-2.mp4",
    ]
    for n, output in enumerate(note["outputs"]):
        assert_stored_output(pipeline, output, task["id"], n)


def test_download_failure_leaves_no_video_when_the_output_is_truncated_or_not_mp4(
    pipeline: LocalPipeline,
) -> None:
    # Given one output whose download always breaks off and one that is an HTML page
    pipeline.send_prompt("A cut-off river [sim:truncate]", job_id="truncated-1")
    pipeline.send_prompt("A fake video [sim:not-mp4]", job_id="html-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then each job gets one failed notification naming why
    truncated = only_notification(result, "truncated-1")
    html = only_notification(result, "html-1")
    assert (truncated["status"], truncated["error"]["code"]) == ("failed", "download_incomplete")
    assert (html["status"], html["error"]["code"]) == ("failed", "not_mp4")
    # ... each listing the video still at WaveSpeed among its outputs (by source, nothing
    # stored), and until when, so it can be recovered
    for note in (truncated, html):
        [source] = note["outputs"]
        assert set(source) == {"index", "source_url", "source_expires_at"}
        assert note["unstored_outputs"] == note["outputs"]
        assert source["source_url"].startswith(simulator_of(pipeline).base_url + "/")
        expires = datetime.fromisoformat(source["source_expires_at"])
        assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    # ... and no object and no half-finished multipart upload is left behind
    assert keys_under(pipeline, "videos/truncated-1/") == []
    assert keys_under(pipeline, "videos/html-1/") == []
    assert pipeline.incomplete_uploads() == []


def test_job_fails_with_deadline_passed_when_the_generation_outlasts_the_deadline(
    make_pipeline: PipelineFactory,
) -> None:
    # Given a 1-second poll deadline and a generation that takes 30 seconds
    pipeline = make_pipeline(poll_deadline_s=1, sim=SimulatorConfig(generation_seconds=30))
    pipeline.send_prompt("A very slow sunrise", job_id="slow-1")

    # When the pipeline runs
    result = run(pipeline)

    # Then the job fails with deadline_passed, naming the prediction that may still finish
    note = only_notification(result, "slow-1")
    assert note["status"] == "failed"
    assert note["error"]["code"] == "deadline_passed"
    [task] = simulator_of(pipeline).tasks()
    assert note["request_id"] == task["id"]
    assert task["id"] in note["error"]["message"]
    assert note["cost"]["paid"] is True
