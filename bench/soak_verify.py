"""Checks a finished soak against the pipeline's promises and counts what happened."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from kling_local.pipeline import LocalPipeline, RunResult
from kling_local.simulator import WaveSpeedSimulator

from .soak_real import (
    UNKNOWN,
    RealServiceCheck,
    RealServiceCounts,
    ambiguous,
    expected_failure,
    queue_and_outages,
)
from .soak_workload import FILE_LINE, MALFORMED_FILE, Job, Workload

FILE_JOB_ID = re.compile(r"^file-[0-9a-f]{24}-(\d+)\Z")


@dataclass(frozen=True)
class TaskTruth:
    """A simulator task with the faults it was dealt, as `tasks()` reports them."""

    id: str
    prompt: str
    status: str
    output_count: int
    cut_once: bool
    truncate: bool
    downloads: int
    code: int


TRUTH_KEYS = ("id", "prompt", "status", "output_count", "cut_once", "truncate", "downloads", "code")


def task_truths(sim: WaveSpeedSimulator) -> list[TaskTruth]:
    return [TaskTruth(*(task[key] for key in TRUTH_KEYS)) for task in sim.tasks()]


@dataclass
class PacingCounts:
    """How the account's start rate shaped the run (filled in by the soak)."""

    tier: str = "none"
    starts_per_minute: int = 0
    minute_s: float = 60.0
    #: Starts taken behind an earlier one still to come: the job slept or was re-sent.
    paced_waits: int = 0
    #: Jobs put back on the queue to wait for their turn (or after a 429): no receive spent.
    paced_resends: int = 0
    #: Submits the simulator answered 429: injected, and any over the account's rate.
    answered_429: int = 0
    #: Jobs that ended `retries_exhausted`: pacing must never lead there.
    given_up: int = 0


@dataclass
class SoakReport:
    """Every count the soak prints; `violations` lists each broken guarantee in detail."""

    jobs: int = 0
    video_bytes: int = 0
    valid_jobs: int = 0
    invalid_messages: int = 0
    invalid_file_lines: int = 0
    malformed_files: int = 0
    messages_sent: int = 0
    uploads: int = 0
    same_id_resends: int = 0
    lost_deletes_planned: int = 0
    lost_deletes_applied: int = 0
    submit_requests: int = 0
    submits_refused: int = 0
    paid_submissions: int = 0
    jobs_paid: int = 0
    duplicate_paid: int = 0
    unknown_tasks: int = 0
    status_polls: int = 0
    downloads_started: int = 0
    generations_failed: int = 0
    generations_cancelled: int = 0
    cut_once_tasks: int = 0
    cut_once_recovered: int = 0
    truncated_tasks: int = 0
    notifications: int = 0
    jobs_notified_once: int = 0
    jobs_without_notification: int = 0
    jobs_notified_twice_or_more: int = 0
    unexpected_notifications: int = 0
    wrong_outcome: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    completed_outputs_verified: int = 0
    multipart_outputs: int = 0
    output_mismatches: int = 0
    objects_of_failed_jobs: int = 0
    stray_objects: int = 0
    incomplete_uploads: int = 0
    dead_letters: int = 0
    dead_letters_expected: int = 0
    dead_letters_missing: int = 0
    dead_letters_unexpected: int = 0
    dead_letter_extra_copies: int = 0
    dead_letters_without_reason: int = 0
    #: Outputs (notifications, DLQ attributes) holding the API key.
    leaks: int = 0
    timed_out: bool = False
    real: RealServiceCounts = field(default_factory=RealServiceCounts)
    pacing: PacingCounts = field(default_factory=PacingCounts)
    wall_s: float = 0.0
    jobs_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def read_dead_letters(pipeline: LocalPipeline) -> list[dict[str, Any]]:
    """Every DLQ message, each once: received and hidden until the queue answers empty."""
    found: dict[str, dict[str, Any]] = {}
    empty_rounds = 0
    while empty_rounds < 2:
        messages = pipeline.sqs.receive_message(
            QueueUrl=pipeline.dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=600,
        ).get("Messages", [])
        empty_rounds = 0 if messages else empty_rounds + 1
        for message in messages:
            found[message["MessageId"]] = dict(message)
    return list(found.values())


def _dead_letter_key(body: str) -> str:
    """An S3 event is recognised by its object key, any other message by its exact body."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):  # hostile bodies: bombs, deep nesting
        return body
    if isinstance(decoded, dict) and isinstance(decoded.get("Records"), list):
        keys = [r.get("s3", {}).get("object", {}).get("key", "") for r in decoded["Records"]]
        return "s3:" + ",".join(unquote_plus(str(k)) for k in keys)
    return body


def _brief(note: dict[str, Any]) -> str:
    error = note.get("error") or {}
    return (
        f"{note.get('job_id')} {note.get('status')} source={note.get('source')} "
        f"error={error.get('code')}: {str(error.get('message'))[:100]}"
    )


class _Checker:
    def __init__(self, workload: Workload, pipeline: LocalPipeline, result: RunResult) -> None:
        assert pipeline.simulator is not None, "the soak runs against the built-in simulator"
        self.workload = workload
        self.pipeline = pipeline
        self.sim = pipeline.simulator
        self.result = result
        self.report = SoakReport()
        self.by_job = result.by_job()
        self.tasks = task_truths(self.sim)
        self.snapshots: dict[str, list[dict[str, Any]]] = {}
        for snapshot in self.sim.tasks():
            self.snapshots.setdefault(snapshot["prompt"], []).append(snapshot)
        self.real = RealServiceCheck(self.report.real, self.violation)
        self.tasks_by_prompt: dict[str, list[TaskTruth]] = {}
        for task in self.tasks:
            self.tasks_by_prompt.setdefault(task.prompt, []).append(task)
        self.objects = {obj["Key"]: obj for obj in pipeline.objects()}
        self.allowed_objects: set[str] = set()
        self.expected_ids: set[str] = set()
        self.dead_letter_messages: list[dict[str, Any]] = []

    def violation(self, text: str) -> None:
        self.report.violations.append(text)

    # ----------------------------------------------------------------------- attribution
    def job_id_of(self, job: Job) -> str | None:
        """The job's id; for file-derived ids the one its notification carries for its line."""
        if job.job_id is not None:
            return job.job_id
        if job.kind not in (FILE_LINE, MALFORMED_FILE):
            return None
        line = job.line if job.kind == FILE_LINE else 0
        ids = {
            note["job_id"]
            for note in self.result.notifications
            if note.get("source", {}).get("key") == job.file_key
            and (job.kind == MALFORMED_FILE or note.get("source", {}).get("line") == line)
            and (match := FILE_JOB_ID.match(note["job_id"])) is not None
            and int(match.group(1)) == line
        }
        if len(ids) > 1:
            self.violation(f"{job.label} ({job.file_key} line {line}) notified under ids {ids}")
        return min(ids) if ids else None

    # ----------------------------------------------------------------------- checks
    def run(self, wall_s: float) -> SoakReport:
        r = self.report
        w = self.workload
        stats = self.sim.stats()
        r.jobs = len(w.jobs)
        r.valid_jobs = len(w.valid_jobs)
        r.invalid_messages = sum(1 for j in w.jobs if j.kind == "invalid-message")
        r.invalid_file_lines = sum(1 for j in w.jobs if j.kind == "invalid-line")
        r.malformed_files = sum(1 for j in w.jobs if j.kind == MALFORMED_FILE)
        r.messages_sent = len(w.deliveries)
        r.uploads = len(w.uploads)
        r.same_id_resends = len(w.resent)
        r.lost_deletes_planned = w.lost.planned
        r.lost_deletes_applied = len(w.lost.applied)
        r.submit_requests = stats["submit_requests"]
        r.paid_submissions = stats["tasks_created"]
        r.submits_refused = stats["submit_requests"] - stats["tasks_created"]
        r.status_polls = stats["result_requests"]
        r.downloads_started = stats["downloads_started"]
        r.video_bytes = self.sim.output_size(self.tasks[0].id) if self.tasks else 0
        r.generations_failed = sum(1 for t in self.tasks if t.status == "failed")
        r.generations_cancelled = sum(1 for t in self.tasks if t.status == "cancelled")
        r.truncated_tasks = sum(1 for t in self.tasks if t.truncate and t.status == "completed")
        r.cut_once_tasks = sum(
            1 for t in self.tasks if t.cut_once and not t.truncate and t.status == "completed"
        )
        queue_and_outages(self.sim, r.real)
        self.check_paid()
        for job in w.jobs:
            self.check_job(job)
        self.check_notifications()
        self.check_objects()
        self.check_dead_letters()
        self.check_leaks()
        if "(timeout)" in self.result.unfinished:
            r.timed_out = True
            self.violation("the run timed out before the pipeline went idle")
        r.wall_s = round(wall_s, 1)
        r.jobs_per_s = round(r.jobs / wall_s, 2) if wall_s else 0.0
        r.outcomes = dict(sorted(r.outcomes.items()))
        return r

    def check_paid(self) -> None:
        r = self.report
        prompts = {job.prompt for job in self.workload.valid_jobs}
        for prompt, tasks in self.tasks_by_prompt.items():
            if prompt not in prompts:
                r.unknown_tasks += len(tasks)
                self.violation(f"paid task(s) {[t.id for t in tasks]} match no valid job: {prompt}")
            elif len(tasks) > 1:
                r.duplicate_paid += len(tasks) - 1
                self.violation(f"prompt paid {len(tasks)} times: {[t.id for t in tasks]} {prompt}")
        r.jobs_paid = sum(1 for p in prompts if p in self.tasks_by_prompt)

    def check_job(self, job: Job) -> None:
        r = self.report
        job_id = self.job_id_of(job)
        if job_id is None:
            r.jobs_without_notification += 1
            self.violation(f"{job.label} ({job.kind}, {job.file_key or ''}): no notification")
            return
        self.expected_ids.add(job_id)
        notes = self.by_job.get(job_id, [])
        if not notes:
            r.jobs_without_notification += 1
            self.violation(f"{job.label} ({job.kind}) {job_id}: no terminal notification")
            return
        if len(notes) > 1:
            r.jobs_notified_twice_or_more += 1
            statuses = [n["status"] for n in notes]
            self.violation(
                f"{job.label} ({job.kind}) {job_id}: {len(notes)} notifications {statuses}"
            )
        else:
            r.jobs_notified_once += 1
        note = notes[0]
        code = (note.get("error") or {}).get("code")
        outcome = note["status"] if code is None else f"{note['status']}/{code}"
        r.outcomes[outcome] = r.outcomes.get(outcome, 0) + 1
        expected, task = self.expected_outcome(job)
        if outcome not in expected:
            r.wrong_outcome += 1
            self.violation(f"{job.label} ({job.kind}) {job_id}: expected {expected}, got {outcome}")
        if task is not None and note.get("request_id") not in (None, task.id):
            self.violation(f"{job_id}: request_id {note.get('request_id')} is not task {task.id}")
        if job.valid:
            name = f"{job.label} ({job.kind}) {job_id}"
            self.real.job(name, job.prompt, note, outcome, self.snapshots.get(job.prompt or "", []))
        if note["status"] == "completed" and task is not None:
            self.check_outputs(job_id, note, task)
        if task is not None and task.cut_once and not task.truncate and outcome == "completed":
            r.cut_once_recovered += 1

    def expected_outcome(self, job: Job) -> tuple[tuple[str, ...], TaskTruth | None]:
        if not job.valid:
            return (f"rejected/{job.rejected_code}",), None
        tasks = self.tasks_by_prompt.get(job.prompt or "", [])
        if not tasks:
            # Only a submit refused on every delivery leaves a valid job unpaid.
            return ("failed/retries_exhausted",), None
        task = tasks[0]
        # A dropped submit answer that the history cannot settle ends unknown, whatever the task.
        unknown = (UNKNOWN,) if ambiguous(job.prompt) else ()
        failure = expected_failure(task.status, task.code)
        if failure is not None:
            return (failure, *unknown), task
        if task.status == "cancelled":
            return ("failed/generation_cancelled", *unknown), task
        if task.status == "completed":
            stored = "failed/download_incomplete" if task.truncate else "completed"
            return (stored, *unknown), task
        return (f"(task still {task.status})",), task

    def check_outputs(self, job_id: str, note: dict[str, Any], task: TaskTruth) -> None:
        r = self.report
        outputs = note.get("outputs") or []
        if len(outputs) != task.output_count:
            r.output_mismatches += 1
            self.violation(f"{job_id}: {len(outputs)} outputs, the task made {task.output_count}")
        sidecar = (note.get("sidecar") or {}).get("key")
        if sidecar:
            self.allowed_objects.add(sidecar)
        for n, output in enumerate(outputs):
            key = output.get("key", "")
            self.allowed_objects.add(key)
            if key not in self.objects:
                r.output_mismatches += 1
                self.violation(f"{job_id}: notified output {key} is not in the videos bucket")
                continue
            data = self.pipeline.read_object(key)
            stored = hashlib.sha256(data).hexdigest()
            expected = self.sim.output_sha256(task.id, n)
            # A multipart upload's ETag ends in -<part count>.
            parts = str(self.objects[key].get("ETag", "")).strip('"').rpartition("-")[2]
            if parts.isdigit() and int(parts) > 1:
                r.multipart_outputs += 1
            if stored == expected == output.get("sha256") and output.get("size") == len(data):
                r.completed_outputs_verified += 1
            else:
                r.output_mismatches += 1
                self.violation(
                    f"{job_id}: {key} sha256 {stored[:12]} (size {len(data)}), simulator "
                    f"{expected[:12]}, notification {str(output.get('sha256'))[:12]} "
                    f"(size {output.get('size')})"
                )

    def check_notifications(self) -> None:
        r = self.report
        r.notifications = len(self.result.notifications)
        for job_id, notes in self.by_job.items():
            if job_id not in self.expected_ids:
                r.unexpected_notifications += len(notes)
                briefs = [_brief(note) for note in notes]
                self.violation(f"notification(s) for a job id the soak never used: {briefs}")
        for job_id in self.result.unfinished:
            if job_id != "(timeout)" and job_id not in self.expected_ids:
                self.violation(f"ledger job {job_id} never got a terminal notification")

    def check_objects(self) -> None:
        r = self.report
        failed = {
            job_id
            for job_id, notes in self.by_job.items()
            if notes and notes[0]["status"] != "completed"
        }
        for key in sorted(self.objects):
            if key in self.allowed_objects:
                continue
            parts = key.split("/")
            if len(parts) > 2 and parts[1] in failed:
                r.objects_of_failed_jobs += 1
                self.violation(f"object {key} left behind by failed job {parts[1]}")
            else:
                r.stray_objects += 1
                self.violation(f"object {key} belongs to no completed output")
        uploads = self.pipeline.incomplete_uploads()
        r.incomplete_uploads = len(uploads)
        for upload in uploads:
            self.violation(f"incomplete multipart upload left: {upload.get('Key')}")

    def check_dead_letters(self) -> None:
        r = self.report
        expected = self.workload.expected_dead_letters()
        # A job whose submit was refused on every delivery is moved there by the redrive policy,
        # which adds no reason attribute.
        redriven = {
            job.body
            for job in self.workload.jobs
            if job.body is not None
            and job.job_id is not None
            and [n["error"]["code"] for n in self.by_job.get(job.job_id, []) if n.get("error")]
            == ["retries_exhausted"]
        }
        for body in redriven:
            expected[body] = next(j for j in self.workload.jobs if j.body == body)
        # A submit whose outcome stayed unknown is parked, with its reason, for an operator.
        for job in self.workload.jobs:
            notes = self.by_job.get(job.job_id or "", [])
            codes = [(n.get("error") or {}).get("code") for n in notes]
            if job.body is not None and codes == [UNKNOWN.partition("/")[2]]:
                expected[job.body] = job
        r.dead_letters_expected = len(expected)
        seen_by_helper = len(self.pipeline.dead_letters())
        messages = read_dead_letters(self.pipeline)
        self.dead_letter_messages = messages
        r.dead_letters = len(messages)
        if seen_by_helper != len(messages):
            r.notes.append(
                f"LocalPipeline.dead_letters() returned {seen_by_helper} of the "
                f"{len(messages)} DLQ messages"
            )
        copies = Counter(_dead_letter_key(m["Body"]) for m in messages)
        for key, job in expected.items():
            if key not in copies:
                r.dead_letters_missing += 1
                self.violation(f"{job.label} ({job.kind}) is not in the DLQ: {key[:120]}")
        for key, count in copies.items():
            if key not in expected:
                r.dead_letters_unexpected += count
                self.violation(f"DLQ holds {count} unexpected message(s): {key[:160]}")
            elif count > 1:
                r.dead_letter_extra_copies += count - 1
                job = expected[key]
                self.violation(f"DLQ holds {count} copies of {job.label} ({job.kind}): {key[:120]}")
        for message in messages:
            attributes = message.get("MessageAttributes") or {}
            if message["Body"] in redriven:
                continue
            if not (attributes.get("reason") or {}).get("StringValue"):
                r.dead_letters_without_reason += 1
                self.violation(f"DLQ message without a reason: {message['Body'][:120]}")

    def check_leaks(self) -> None:
        """No output may carry the API key, whatever an answer or a message echoed."""
        secret = self.sim.config.api_key
        outputs = [json.dumps(note) for note in self.result.notifications]
        outputs += [
            json.dumps(message.get("MessageAttributes") or {})
            for message in self.dead_letter_messages
        ]
        for text in outputs:
            if secret and secret in text:
                self.report.leaks += 1
                self.violation(f"the API key appears in an output: {text[:120]}")


def verify(
    workload: Workload, pipeline: LocalPipeline, result: RunResult, wall_s: float
) -> SoakReport:
    """Counts the run and lists every guarantee it broke."""
    return _Checker(workload, pipeline, result).run(wall_s)
