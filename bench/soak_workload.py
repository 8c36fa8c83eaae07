"""The soak's workload: attributable jobs, faulty deliveries, a poller that loses deletes."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote_plus

from kling_local.pipeline import LocalOptions, LocalPipeline
from kling_local.simulator.config import MARKER_DROP_SUBMIT, Outage
from kling_pipeline.job.request import message_job_id

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

#: Kinds of job the soak plans; the first four are valid and must reach WaveSpeed once.
MESSAGE = "message"  # JSON job message with an explicit job_id
DERIVED = "derived"  # JSON job message without job_id: the id is msg-<digest of the body>
PLAIN = "plain"  # plain-text body: the prompt itself, id msg-<digest of the body>
FILE_LINE = "file-line"  # a line of an uploaded .jsonl prompt file
INVALID_MESSAGE = "invalid-message"
INVALID_LINE = "invalid-line"
MALFORMED_FILE = "malformed-file"
VALID_KINDS = (MESSAGE, DERIVED, PLAIN, FILE_LINE)

SUBJECTS = (
    "a red fox", "a lighthouse", "a paper boat", "a hummingbird", "an old tram", "a glacier",
    "a street market", "a koi pond", "a desert caravan", "a jazz trio", "a snow leopard",
    "a windmill", "a neon alley", "a sailing ship", "a bamboo forest", "a hot-air balloon",
)  # fmt: skip
ACTIONS = (
    "at sunrise", "in heavy rain", "under a full moon", "in slow motion", "seen from a drone",
    "in a snowstorm", "at golden hour", "through morning fog", "in a timelapse", "at dusk",
)  # fmt: skip
STYLES = ("cinematic", "documentary", "dreamlike", "hand-held", "macro", "wide-angle")
#: One job per fault class carries the simulator's marker, so every class occurs in every run
#: whatever the random rates draw; the rates add the rest.
COVERAGE_MARKERS = (
    "[sim:fail]", "[sim:cancel]", "[sim:cut-once]", "[sim:truncate]", "[sim:429-once]",
    "[sim:poll-500-once]", "[sim:moderation]", "[sim:fail-5000]", MARKER_DROP_SUBMIT,
)  # fmt: skip


@dataclass(frozen=True)
class RealService:
    """What the real WaveSpeed does besides random faults, as the soak drives it.

    Tasks over the account's concurrency wait `created` in WaveSpeed's queue; status reads go
    through outage windows (HTTP 503, then HTTP 200 with envelope code 5003) shorter than the
    generation deadline; generations fail with WaveSpeed's `data.code` (moderation among them,
    refunded); and a share of submits create their paid task but the answer never arrives, so
    the pipeline must find the task in the prediction history instead of posting again.
    """

    max_concurrency: int = 6
    #: Status-read outages: (seconds after the simulator starts, length in seconds, form).
    outages: tuple[tuple[float, float, str], ...] = ((15.0, 10.0, "http"), (40.0, 10.0, "code"))
    moderation_rate: float = 0.02
    #: Codes a random generation failure carries (task failed, server error).
    fail_codes: tuple[int, ...] = (1403, 1405, 5000)
    #: Share of valid prompts whose submit answer is dropped after the task was created.
    ambiguous_rate: float = 0.02
    #: Looks at the history after an ambiguous submit (production waits 0/2/4/8/16 s).
    reconcile_waits_s: tuple[float, ...] = (0.0, 0.5)

    def simulator_fields(self, time_scale: float = 1.0) -> dict[str, Any]:
        """SimulatorConfig keyword arguments; outages keep their wall-clock place and length
        on a simulator whose clock runs at `time_scale` (it multiplies their seconds)."""
        return {
            "max_concurrency": self.max_concurrency,
            "outages": tuple(
                Outage(
                    start_seconds=start / time_scale,
                    seconds=length / time_scale,
                    on="result",
                    form=form,
                )
                for start, length, form in self.outages
            ),
            "moderation_rate": self.moderation_rate,
            "fail_codes": self.fail_codes,
        }

    def env(self) -> dict[str, str]:
        """Function environment the soak's pipeline runs with."""
        return {"RECONCILE_WAITS_S": ",".join(str(w) for w in self.reconcile_waits_s)}


@dataclass
class Job:
    """One job id the soak expects exactly one terminal notification for."""

    label: str
    kind: str
    #: Unique per job, so simulator tasks map back to jobs; None when it never reaches WaveSpeed.
    prompt: str | None
    #: Known in advance (msg-… ids derive from the body), or None (file-… ids are derived
    #: from the upload's version and attributed through the notification's source).
    job_id: str | None
    body: str | None = None
    file_key: str | None = None
    line: int | None = None
    #: The error code of the expected `rejected` notification, for invalid jobs.
    rejected_code: str | None = None

    @property
    def valid(self) -> bool:
        return self.kind in VALID_KINDS


@dataclass
class Upload:
    """A prompt file uploaded under prompts/ and the jobs it holds."""

    name: str
    data: bytes
    jobs: list[Job]

    @property
    def key(self) -> str:
        return f"prompts/{self.name}"


@dataclass
class LostDeletes:
    """Messages whose first successful delete the poller skips, so SQS redelivers them.

    Targets are matched on what a redelivery keeps, the body: a job message by its job_id, an S3
    event by the object key (URL-encoded in the event, as S3 sends it), else by the exact body.
    """

    job_ids: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    bodies: set[str] = field(default_factory=set)
    #: target -> SQS message id whose delete was skipped
    applied: dict[str, str] = field(default_factory=dict)

    @property
    def planned(self) -> int:
        return len(self.job_ids) + len(self.keys) + len(self.bodies)

    def target(self, body: str) -> str | None:
        decoded: Any = None
        if body.lstrip().startswith("{"):
            try:
                decoded = json.loads(body)
            except (ValueError, RecursionError):  # hostile bodies: bombs, deep nesting
                decoded = None
        if isinstance(decoded, dict):
            for record in decoded.get("Records") or []:
                key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "")))
                if key in self.keys:
                    return f"s3:{key}"
            job_id = decoded.get("job_id")
            if isinstance(job_id, str) and job_id in self.job_ids:
                return f"job:{job_id}"
        return f"body:{body}" if body in self.bodies else None

    def lose(self, message_id: str, body: str) -> bool:
        """True when this delete must be skipped (the first successful delete of a target)."""
        target = self.target(body)
        if target is None or target in self.applied:
            return False
        self.applied[target] = message_id
        return True


class _ForgetfulSqs:
    """The poller's SQS client, except that chosen deletes on the job queue never happen."""

    def __init__(self, real: SQSClient, lost: LostDeletes, queue_url: str) -> None:
        self._real = real
        self._lost = lost
        self._queue_url = queue_url
        self._received: dict[str, tuple[str, str]] = {}

    def receive_message(self, **kwargs: Any) -> Any:
        answer = self._real.receive_message(**kwargs)
        if kwargs.get("QueueUrl") == self._queue_url:
            for message in answer.get("Messages", []):
                self._received[message["ReceiptHandle"]] = (message["MessageId"], message["Body"])
        return answer

    def delete_message(self, **kwargs: Any) -> Any:
        received = self._received.pop(str(kwargs.get("ReceiptHandle")), None)
        if kwargs.get("QueueUrl") == self._queue_url and received and self._lost.lose(*received):
            return {}  # the delete is "lost": the message reappears after its visibility timeout
        return self._real.delete_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class SoakPipeline(LocalPipeline):
    """The local pipeline whose emulated Lambda SQS poller loses the delete of chosen messages."""

    def __init__(self, options: LocalOptions, lost: LostDeletes) -> None:
        super().__init__(options)
        self.lost = lost

    def poll_queues_once(self) -> int:
        # The real poller step runs unchanged; only its view of SQS forgets chosen deletes.
        real = self.sqs
        self.sqs = cast("SQSClient", _ForgetfulSqs(real, self.lost, self.job_queue_url))
        try:
            return super().poll_queues_once()
        finally:
            self.sqs = real


@dataclass
class Workload:
    """Everything the soak sends, and what it expects back."""

    jobs: list[Job]
    #: Raw bodies in send order; a job sent twice under one job_id appears twice.
    deliveries: list[tuple[str, Job]]
    uploads: list[Upload]
    #: Upload i is made after deliveries[:upload_after[i]] were sent.
    upload_after: list[int]
    resent: list[Job]
    lost: LostDeletes

    @property
    def valid_jobs(self) -> list[Job]:
        return [job for job in self.jobs if job.valid]

    @property
    def malformed_upload(self) -> Upload:
        return next(u for u in self.uploads if u.jobs and u.jobs[0].kind == MALFORMED_FILE)

    def expected_dead_letters(self) -> dict[str, Job]:
        """What the DLQ must hold: each invalid message's body and the malformed file's event."""
        expected = {f"s3:{self.malformed_upload.key}": self.malformed_upload.jobs[0]}
        for job in self.jobs:
            if job.kind == INVALID_MESSAGE and job.body is not None:
                expected[job.body] = job
        return expected


def _prompt(rng: random.Random, seed: int, index: int) -> str:
    return (
        f"soak {seed}-{index:04d}: {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)}, "
        f"{rng.choice(STYLES)} shot"
    )


def _valid_fields(rng: random.Random, index: int) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if rng.random() < 0.2:
        fields["duration"] = 10
    if rng.random() < 0.3:
        fields["aspect_ratio"] = rng.choice(("9:16", "1:1"))
    if rng.random() < 0.2:
        fields["negative_prompt"] = "blurry, low quality"
    if rng.random() < 0.2:
        fields["guidance_scale"] = round(rng.uniform(0, 1), 2)
    if rng.random() < 0.5:
        fields["metadata"] = {"soak_index": index}
    return fields


def _invalid_body(variant: int, prompt: str, job_id: str) -> tuple[str, str]:
    """An invalid job message and the job id its rejection must carry: the one it names when
    it can be read, else the one its body derives. Careless mistakes alternate with hostile
    bodies (parse bombs, non-finite numbers, surrogates, wrappers, event look-alikes)."""
    named = json.dumps({"prompt": prompt, "job_id": job_id})[:-1]  # '{"prompt": ..., "job_id": ..'
    bodies: list[tuple[dict[str, Any] | str, str | None]] = [
        ({"prompt": prompt, "duration": 7, "job_id": job_id}, job_id),
        (named + ', "metadata": {"x": NaN}}', None),
        ({"prompt": prompt, "durration": 5, "job_id": job_id}, job_id),
        (named + ', "metadata": {"n": ' + "9" * 5000 + "}}", None),
        ('{"prompt": "' + prompt + '", "job_id": "' + job_id + '"', None),
        (named + ', "metadata": ' + '{"a": ' * 1200 + "1" + "}" * 1200 + "}", None),
        ({"prompt": "   ", "job_id": job_id}, job_id),
        ("\ufeff[" + named + "}]", None),
        ({"prompt": prompt, "job_id": f"{job_id} has spaces!"}, None),
        (json.dumps(f"{prompt} ({job_id})"), None),
        ({"prompt": prompt, "aspect_ratio": "4:3", "job_id": job_id}, job_id),
        ({"prompt": "\u200b\u200d\u2060", "job_id": job_id}, job_id),
        ({"prompt": prompt, "guidance_scale": 1.5, "job_id": job_id}, job_id),
        ({"prompt": prompt, "Records": [], "job_id": job_id}, job_id),
        ({"prompt": prompt, "metadata": ["not", "an", "object"], "job_id": job_id}, job_id),
        (named + ', "duration": 5, "duration": 10}', None),
        (named + ', "negative_prompt": "\\ud800"}', None),
    ]
    body, expected_id = bodies[variant % len(bodies)]
    text = body if isinstance(body, str) else json.dumps(body)
    return text, expected_id or message_job_id(text)


def _prompt_file(
    name: str, size: int, rng: random.Random, seed: int, counter: list[int], invalid_at: int
) -> Upload:
    """A .jsonl file: valid lines with and without job_id, optionally one invalid line."""
    lines: list[str] = []
    entries: list[Job] = []
    for position in range(size):
        if position == size - 1:
            lines.append("")  # a blank line is ignored, but still counts for line numbers
        number = len(lines) + 1
        index = counter[0]
        counter[0] += 1
        prompt = _prompt(rng, seed, index)
        key = f"prompts/{name}"
        if position == invalid_at:
            job_id = f"soak-{seed}-{index:04d}"
            lines.append(json.dumps({"prompt": prompt, "duration": 3, "job_id": job_id}))
            job = Job(f"f{index:04d}", INVALID_LINE, None, job_id, file_key=key, line=number)
            job.rejected_code = "invalid_job"
        elif position == 0:
            # No job_id: the pipeline derives file-<hash>-<line> from the upload's sequencer.
            lines.append(json.dumps({"prompt": prompt}))
            job = Job(f"f{index:04d}", FILE_LINE, prompt, None, file_key=key, line=number)
        else:
            job_id = f"soak-{seed}-{index:04d}"
            fields = _valid_fields(rng, index)
            lines.append(json.dumps({"prompt": prompt, "job_id": job_id, **fields}))
            job = Job(f"f{index:04d}", FILE_LINE, prompt, job_id, file_key=key, line=number)
        entries.append(job)
    return Upload(name, ("\n".join(lines) + "\n").encode(), entries)


def plan_workload(
    total_jobs: int,
    seed: int,
    *,
    invalid_rate: float,
    duplicate_rate: float,
    ambiguous_rate: float = 0.0,
) -> Workload:
    """`total_jobs` job ids: valid messages, invalid messages, prompt-file lines, one bad file.
    A share `ambiguous_rate` of the messages' prompts carry the marker that drops the submit's
    answer after WaveSpeed created the task."""
    rng = random.Random(seed)
    lines_per_file = 3 if total_jobs < 100 else 5
    invalid_count = max(1, round(total_jobs * invalid_rate))
    message_count = total_jobs - invalid_count - 2 * lines_per_file - 1
    if message_count < 10:
        raise ValueError(f"--jobs must be at least {total_jobs - message_count + 10}")
    counter = [0]
    jobs: list[Job] = []
    deliveries: list[tuple[str, Job]] = []

    for position in range(message_count):
        index = counter[0]
        counter[0] += 1
        prompt = _prompt(rng, seed, index)
        roll = rng.random()
        label = f"m{index:04d}"
        if position < len(COVERAGE_MARKERS):
            prompt = f"{prompt} {COVERAGE_MARKERS[position]}"
            roll = 1.0  # an explicit job_id, so the job is easy to find in the report
        elif ambiguous_rate and rng.random() < ambiguous_rate:
            prompt = f"{prompt} {MARKER_DROP_SUBMIT}"
        if roll < 0.08:
            job = Job(label, PLAIN, prompt, message_job_id(prompt), body=prompt)
        elif roll < 0.16:
            body = json.dumps({"prompt": prompt, **_valid_fields(rng, index)})
            job = Job(label, DERIVED, prompt, message_job_id(body), body=body)
        else:
            job_id = f"soak-{seed}-{index:04d}"
            body = json.dumps({"prompt": prompt, "job_id": job_id, **_valid_fields(rng, index)})
            job = Job(label, MESSAGE, prompt, job_id, body=body)
        jobs.append(job)
        deliveries.append((job.body or "", job))

    for variant in range(invalid_count):
        index = counter[0]
        counter[0] += 1
        job_id = f"soak-{seed}-{index:04d}"
        body, expected_id = _invalid_body(variant, _prompt(rng, seed, index), job_id)
        job = Job(f"i{index:04d}", INVALID_MESSAGE, None, expected_id, body=body)
        job.rejected_code = "invalid_job"
        jobs.append(job)
        deliveries.append((body, job))

    uploads = [
        _prompt_file(f"soak-{seed}-a.jsonl", lines_per_file, rng, seed, counter, invalid_at=1),
        _prompt_file(f"soak-{seed}-b.jsonl", lines_per_file, rng, seed, counter, invalid_at=-1),
    ]
    malformed_name = f"soak-{seed}-broken.json"
    malformed = Job(f"x{counter[0]:04d}", MALFORMED_FILE, None, None)
    malformed.file_key, malformed.rejected_code = (
        f"prompts/{malformed_name}",
        "prompt_file_rejected",
    )
    uploads.append(Upload(malformed_name, b'[{"prompt": "a cat", "duration": 5},\n', [malformed]))
    jobs += uploads[0].jobs + uploads[1].jobs + [malformed]

    # Duplicated deliveries: half the same job_id in a second message, half a lost delete.
    duplicates = max(2, round(duplicate_rate * (len(deliveries) + len(uploads))))
    explicit = [job for job in jobs if job.kind == MESSAGE]
    resent = rng.sample(explicit, min(len(explicit), duplicates // 2))
    deliveries += [(job.body or "", job) for job in resent]
    lost = _plan_lost_deletes(rng, jobs, uploads, resent, duplicates - len(resent))
    rng.shuffle(deliveries)
    if resent:
        # One pair goes out back to back, so both copies land in one batch and race for the
        # claim; the other pairs are spread out and mostly meet a job already running or done.
        pair = [d for d in deliveries if d[1] is resent[0]]
        deliveries = [d for d in deliveries if d[1] is not resent[0]]
        third = len(deliveries) // 3  # away from the uploads, made at 1/4, 1/2 and 3/4
        deliveries[third:third] = pair
    deliveries = _spread_dropped_answers(deliveries)
    count = len(deliveries)
    return Workload(
        jobs=jobs,
        deliveries=deliveries,
        uploads=uploads,
        upload_after=[count // 4, count // 2, (3 * count) // 4],
        resent=resent,
        lost=lost,
    )


def _spread_dropped_answers(deliveries: list[tuple[str, Job]]) -> list[tuple[str, Job]]:
    """Dropped submit answers spaced evenly through the send order.

    The pipeline can only name a lost answer's task when it is the one unclaimed task in the
    history around that submit; two answers lost within seconds of each other both end
    `submit_outcome_unknown` (by design: it never guesses). Spaced out, as rare real losses
    are, the soak measures recovery rather than how often its own random draws collide.
    """
    dropped = [d for d in deliveries if MARKER_DROP_SUBMIT in (d[1].prompt or "")]
    rest = [d for d in deliveries if MARKER_DROP_SUBMIT not in (d[1].prompt or "")]
    step = len(deliveries) / (len(dropped) + 1)
    for n, delivery in enumerate(dropped, start=1):
        rest.insert(min(len(rest), round(n * step)), delivery)
    return rest


def _plan_lost_deletes(
    rng: random.Random, jobs: list[Job], uploads: list[Upload], resent: list[Job], wanted: int
) -> LostDeletes:
    """Every delivery kind loses a delete at least once; random messages make up the rest."""
    lost = LostDeletes()
    resent_ids = {job.job_id for job in resent}

    def by_kind(kind: str) -> list[Job]:
        return [j for j in jobs if j.kind == kind and j.job_id not in resent_ids]

    def add(job: Job) -> None:
        if job.body is not None and job.job_id is not None and job.job_id in job.body:
            lost.job_ids.add(job.job_id)
        elif job.body is not None:
            lost.bodies.add(job.body)
        elif job.job_id is not None:  # a fanned-out prompt-file line
            lost.job_ids.add(job.job_id)

    for kind in (MESSAGE, DERIVED, PLAIN, INVALID_MESSAGE):
        candidates = by_kind(kind)
        if candidates:
            add(rng.choice(candidates))
    lost.keys.update({uploads[0].key, uploads[-1].key})  # a valid file's and the bad file's event
    line = next(j for j in uploads[1].jobs if j.kind == FILE_LINE and j.job_id is not None)
    add(line)
    pool = [j for j in jobs if j.body is not None and j.job_id not in resent_ids]
    rng.shuffle(pool)
    for job in pool:
        if lost.planned >= wanted:
            break
        add(job)
    return lost


def iter_sends(workload: Workload) -> Iterator[tuple[str, Job] | Upload]:
    """Deliveries in send order with the uploads interleaved."""
    for position, delivery in enumerate(workload.deliveries):
        for upload, after in zip(workload.uploads, workload.upload_after, strict=True):
            if after == position:
                yield upload
        yield delivery
