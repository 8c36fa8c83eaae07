"""The soak's checks of what the real WaveSpeed does: queueing, outages, codes, lost answers.

Each job's notification is held to the simulator's truth about its task: a failed generation
ends with the job error code of its WaveSpeed `data.code`, a refunded one says `paid: false`,
a submit whose answer was dropped after the task was created is either recovered (the job
continues with that very task) or ends `submit_outcome_unknown` with evidence — never with a
second task — and no completed video is lost without the notification saying where it still is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kling_local.simulator import WaveSpeedSimulator
from kling_local.simulator.config import MARKER_DROP_SUBMIT

#: The job error code each WaveSpeed task error code (`data.code`) must end in; written out
#: here rather than imported, so the soak does not take the pipeline's word for it.
JOB_ERROR_OF_TASK_CODE = {
    1200: "content_moderated",
    1400: "invalid_parameters",
    1401: "invalid_parameters",
    1402: "media_unreachable",
    1403: "generation_failed",
    1405: "generation_failed",
    5000: "wavespeed_server_error",
    5003: "wavespeed_server_error",
    5004: "wavespeed_server_error",
}
#: Generations WaveSpeed refunds; a cancelled one stays paid.
REFUNDED_STATUSES = ("failed", "timeout")
UNKNOWN = "failed/submit_outcome_unknown"


@dataclass
class RealServiceCounts:
    """What the real-service behaviours did during a soak, and what they cost in promises."""

    max_concurrency: int = 0
    queued_tasks: int = 0
    longest_queue_wait_s: float = 0.0
    outage_windows: int = 0
    outage_seconds: float = 0.0
    generations_ended_in_outage: int = 0
    failures_by_code: dict[str, int] = field(default_factory=dict)
    moderated: int = 0
    refunded_jobs: int = 0
    refunded_reported_unpaid: int = 0
    wrong_paid_flag: int = 0
    ambiguous_submits: int = 0
    ambiguous_recovered: int = 0
    ambiguous_unknown: int = 0
    ambiguous_tasks_created: int = 0
    ambiguous_unknown_without_evidence: int = 0
    #: Completed videos whose job got neither the video nor a notification naming where it is
    #: (unknown submit outcomes are counted above, with their task, not here).
    lost_paid_videos: int = 0


def queue_and_outages(sim: WaveSpeedSimulator, counts: RealServiceCounts) -> None:
    """How many tasks waited in WaveSpeed's queue, and how many ended inside an outage."""
    config = sim.config
    counts.max_concurrency = config.max_concurrency or 0
    counts.outage_windows = len(config.outages)
    counts.outage_seconds = sum(o.seconds * config.time_scale for o in config.outages)
    longest = 0.0
    for task in sim.api.book.all():
        waited = task.started_monotonic - task.created_monotonic
        if waited > 0.001:
            counts.queued_tasks += 1
            longest = max(longest, waited)
        ended = task.started_monotonic + config.generation_seconds
        if sim.api.account.outage_reply("result", ended) is not None:
            counts.generations_ended_in_outage += 1
    counts.longest_queue_wait_s = round(longest, 1)


def expected_failure(status: str, code: int) -> str | None:
    """The outcome a failed or timed-out task's job must end with (None: not such a task)."""
    if status in REFUNDED_STATUSES:
        return f"failed/{JOB_ERROR_OF_TASK_CODE.get(code, 'generation_failed')}"
    return None


def ambiguous(prompt: str | None) -> bool:
    """True for a prompt whose submit answer the simulator drops after creating the task."""
    return prompt is not None and MARKER_DROP_SUBMIT in prompt


class RealServiceCheck:
    """Per-job checks of the real-service promises; `violation` records a broken one."""

    def __init__(self, counts: RealServiceCounts, violation: Any) -> None:
        self.counts = counts
        self._violation = violation

    def job(
        self,
        name: str,
        prompt: str | None,
        note: dict[str, Any],
        outcome: str,
        tasks: list[dict[str, Any]],
    ) -> None:
        """`tasks`: the simulator's snapshots of every task made for this job's prompt."""
        task = tasks[0] if tasks else None
        self._paid_flag(name, note, outcome, task)
        if ambiguous(prompt):
            self._ambiguous(name, note, outcome, tasks)
        if task is None:
            return
        if task["status"] == "failed":
            self.counts.failures_by_code[str(task["code"])] = (
                self.counts.failures_by_code.get(str(task["code"]), 0) + 1
            )
        if outcome == "failed/content_moderated":
            self.counts.moderated += 1
        self._lost_video(name, note, outcome, task)

    def _paid_flag(
        self, name: str, note: dict[str, Any], outcome: str, task: dict[str, Any] | None
    ) -> None:
        paid = (note.get("cost") or {}).get("paid")
        if task is None or outcome == UNKNOWN:
            # Nothing was paid, or the pipeline cannot know which task was its own.
            return
        refunded = task["status"] in REFUNDED_STATUSES
        if refunded:
            self.counts.refunded_jobs += 1
            if paid is False:
                self.counts.refunded_reported_unpaid += 1
        if paid is not (not refunded):
            self.counts.wrong_paid_flag += 1
            self._violation(
                f"{name}: task {task['id']} {task['status']}, notification says paid={paid}"
            )

    def _ambiguous(
        self, name: str, note: dict[str, Any], outcome: str, tasks: list[dict[str, Any]]
    ) -> None:
        c = self.counts
        c.ambiguous_submits += 1
        c.ambiguous_tasks_created += len(tasks)
        if outcome == UNKNOWN:
            c.ambiguous_unknown += 1
            message = str((note.get("error") or {}).get("message", ""))
            if "history" not in message:
                c.ambiguous_unknown_without_evidence += 1
                self._violation(f"{name}: submit_outcome_unknown without evidence: {message}")
        elif tasks and note.get("request_id") == tasks[0]["id"]:
            c.ambiguous_recovered += 1
        elif tasks:
            self._violation(f"{name}: dropped submit answer neither recovered nor unknown")

    def _lost_video(
        self, name: str, note: dict[str, Any], outcome: str, task: dict[str, Any]
    ) -> None:
        if task["status"] != "completed" or outcome in ("completed", UNKNOWN):
            return
        sources = {str(u.get("source_url")) for u in note.get("unstored_outputs") or []}
        if not set(task["outputs"]) <= sources:
            self.counts.lost_paid_videos += 1
            self._violation(
                f"{name}: the completed video of task {task['id']} was neither stored nor "
                f"named in the {outcome} notification"
            )


def rows(c: RealServiceCounts) -> list[tuple[str, object, object]]:
    """The soak table's rows for the real service's behaviours."""
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(c.failures_by_code.items())) or "-"
    return [
        (f"tasks queued behind the concurrency cap of {c.max_concurrency}", c.queued_tasks, None),
        ("longest wait in WaveSpeed's queue, s", c.longest_queue_wait_s, None),
        (f"status-read outage windows ({c.outage_seconds:.0f} s in all)", c.outage_windows, None),
        ("generations that ended inside an outage", c.generations_ended_in_outage, None),
        (f"failed generations by data.code ({codes})", sum(c.failures_by_code.values()), None),
        ("moderated jobs (content_moderated)", c.moderated, None),
        ("refunded jobs notified paid: false", c.refunded_reported_unpaid, c.refunded_jobs),
        ("jobs whose cost.paid contradicts their task", c.wrong_paid_flag, 0),
        ("submits whose answer was dropped after the task was made", c.ambiguous_submits, None),
        ("  recovered from the prediction history", c.ambiguous_recovered, None),
        ("  ended submit_outcome_unknown (task counted, not re-sent)", c.ambiguous_unknown, None),
        ("  tasks created for them (one each, never a second POST)",
         c.ambiguous_tasks_created, c.ambiguous_submits),
        ("  unknown outcomes without history evidence", c.ambiguous_unknown_without_evidence, 0),
        ("paid videos lost (neither stored nor named)", c.lost_paid_videos, 0),
    ]  # fmt: skip
