"""The soak's real-service checks catch each broken promise they are there for."""

from __future__ import annotations

from typing import Any

from bench.soak_real import RealServiceCheck, RealServiceCounts, expected_failure

DROPPED = "a fox [sim:drop-submit]"


def task(status: str = "completed", code: int = 0, task_id: str = "t1") -> dict[str, Any]:
    outputs = [f"https://d1.cloudfront.net/predictions/{task_id}/1.mp4"]
    return {
        "id": task_id,
        "status": status,
        "code": code,
        "outputs": outputs if status == "completed" else [],
    }


def checked(
    prompt: str, note: dict[str, Any], outcome: str, tasks: list[dict[str, Any]]
) -> tuple[RealServiceCounts, list[str]]:
    counts = RealServiceCounts()
    violations: list[str] = []
    RealServiceCheck(counts, violations.append).job("job-1", prompt, note, outcome, tasks)
    return counts, violations


def test_failed_generation_expects_the_job_error_of_its_task_code() -> None:
    # Given failed tasks coded moderation, task failure and server error, and a cancelled one
    # When the soak asks which outcome each job must end with
    # Then each maps to its own job error code, and a cancelled task is not such a failure
    assert expected_failure("failed", 1200) == "failed/content_moderated"
    assert expected_failure("failed", 1403) == "failed/generation_failed"
    assert expected_failure("timeout", 5004) == "failed/wavespeed_server_error"
    assert expected_failure("cancelled", 1405) is None


def test_refunded_job_notified_as_paid_is_a_violation() -> None:
    # Given a moderated (refunded) task whose notification still says paid
    note = {"cost": {"paid": True}, "request_id": "t1"}

    # When the check runs
    counts, violations = checked("a fox", note, "failed/content_moderated", [task("failed", 1200)])

    # Then the wrong paid flag is counted and reported
    assert counts.wrong_paid_flag == 1 and counts.refunded_reported_unpaid == 0
    assert len(violations) == 1 and "paid=True" in violations[0]


def test_refunded_job_notified_unpaid_is_counted_without_violation() -> None:
    # Given a moderated task whose notification says paid: false
    note = {"cost": {"paid": False}, "request_id": "t1"}

    # When the check runs
    counts, violations = checked("a fox", note, "failed/content_moderated", [task("failed", 1200)])

    # Then it counts as a refunded job reported unpaid, and as moderated
    assert (counts.refunded_jobs, counts.refunded_reported_unpaid, counts.moderated) == (1, 1, 1)
    assert violations == []


def test_completed_video_neither_stored_nor_named_is_a_lost_paid_video() -> None:
    # Given a completed task whose job failed without naming where the video still is
    note = {"cost": {"paid": True}, "request_id": "t1", "unstored_outputs": []}

    # When the check runs
    counts, violations = checked("a fox", note, "failed/download_incomplete", [task()])

    # Then the video is counted lost
    assert counts.lost_paid_videos == 1
    assert "neither stored nor named" in violations[0]


def test_completed_video_named_by_its_failed_notification_is_not_lost() -> None:
    # Given a completed task whose failed notification gives the video's source URL
    done = task()
    note = {
        "cost": {"paid": True},
        "request_id": "t1",
        "unstored_outputs": [{"source_url": done["outputs"][0]}],
    }

    # When the check runs
    counts, violations = checked("a fox", note, "failed/download_incomplete", [done])

    # Then nothing is lost
    assert counts.lost_paid_videos == 0 and violations == []


def test_dropped_answer_recovered_with_its_own_task_counts_as_recovered() -> None:
    # Given a dropped submit answer whose job completed with the task the POST created
    note = {"cost": {"paid": True}, "request_id": "t1"}

    # When the check runs
    counts, violations = checked(DROPPED, note, "completed", [task()])

    # Then it is one recovered ambiguous submit with one task
    assert (counts.ambiguous_submits, counts.ambiguous_recovered) == (1, 1)
    assert counts.ambiguous_tasks_created == 1 and violations == []


def test_dropped_answer_paid_twice_shows_as_more_tasks_than_submits() -> None:
    # Given a dropped submit answer the pipeline answered with a second POST
    note = {"cost": {"paid": True}, "request_id": "t2"}
    tasks = [task(task_id="t1"), task(task_id="t2")]

    # When the check runs
    counts, violations = checked(DROPPED, note, "completed", tasks)

    # Then two tasks stand against one ambiguous submit, and it was not its own task
    assert (counts.ambiguous_submits, counts.ambiguous_tasks_created) == (1, 2)
    assert counts.ambiguous_recovered == 0
    assert violations == ["job-1: dropped submit answer neither recovered nor unknown"]


def test_unknown_outcome_without_history_evidence_is_a_violation() -> None:
    # Given a dropped answer that ended unknown with a message saying nothing of the history
    note = {"cost": {"paid": False}, "error": {"message": "gave up"}}

    # When the check runs
    counts, violations = checked(DROPPED, note, "failed/submit_outcome_unknown", [task()])

    # Then it is counted unknown, and the missing evidence is reported
    assert (counts.ambiguous_unknown, counts.ambiguous_unknown_without_evidence) == (1, 1)
    assert len(violations) == 1
