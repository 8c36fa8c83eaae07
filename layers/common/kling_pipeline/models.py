"""Typed models for every payload that crosses a boundary, with the job contract's validation."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import MODEL_ID, NOTIFICATION_SCHEMA
from .errors import PermanentError, ValidationError

MAX_PROMPT_CHARS = 2500
MAX_METADATA_BYTES = 2048
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
DURATIONS = (5, 10)
# \Z, not $: "$" also matches before a trailing newline, letting "id\n" through.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
PRICE_PER_5S_USD = 1.30
JOB_FIELDS = (
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "duration",
    "guidance_scale",
    "enhance_prompt",
    "job_id",
    "metadata",
)

Json = dict[str, Any]


@dataclass(frozen=True)
class JobRequest:
    """One validated job (CONTRACT §3); `job_id` is None until derived from its delivery."""

    prompt: str
    negative_prompt: str | None = None
    aspect_ratio: str = "16:9"
    duration: int = 5
    guidance_scale: float | None = None
    enhance_prompt: bool = False
    job_id: str | None = None
    metadata: Json = field(default_factory=dict)

    def with_job_id(self, job_id: str) -> JobRequest:
        return JobRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            aspect_ratio=self.aspect_ratio,
            duration=self.duration,
            guidance_scale=self.guidance_scale,
            enhance_prompt=self.enhance_prompt,
            job_id=job_id,
            metadata=self.metadata,
        )

    def input_view(self) -> Json:
        """The validated input as notifications show it (no job id, no metadata)."""
        view: Json = {
            "prompt": self.prompt,
            "aspect_ratio": self.aspect_ratio,
            "duration": self.duration,
            "enhance_prompt": self.enhance_prompt,
        }
        if self.negative_prompt is not None:
            view["negative_prompt"] = self.negative_prompt
        if self.guidance_scale is not None:
            view["guidance_scale"] = self.guidance_scale
        return view

    def to_message(self) -> Json:
        """A job message body that parses back into this job (used for prompt-file fan-out)."""
        message = self.input_view()
        message["job_id"] = self.job_id
        if self.metadata:
            message["metadata"] = self.metadata
        return message

    def price_usd(self) -> float:
        return price_usd(self.duration)


def price_usd(duration: int) -> float:
    """WaveSpeed's price of one Kling video of `duration` seconds."""
    return round(PRICE_PER_5S_USD * duration / 5, 2)


def api_payload(job: JobRequest, prompt: str | None = None) -> Json:
    """The body WaveSpeed's Kling endpoint expects; `prompt` overrides an enhanced one."""
    body: Json = {
        "prompt": prompt if prompt is not None else job.prompt,
        "aspect_ratio": job.aspect_ratio,
        "duration": job.duration,
    }
    if job.negative_prompt:
        body["negative_prompt"] = job.negative_prompt
    if job.guidance_scale is not None:
        body["guidance_scale"] = job.guidance_scale
    return body


def _text(obj: Json, name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(name, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    trimmed = value.strip()
    if required and not trimmed:
        raise ValidationError(name, "must not be empty")
    if len(trimmed) > MAX_PROMPT_CHARS:
        raise ValidationError(
            name, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(trimmed)}"
        )
    return trimmed


def parse_job_object(obj: Any) -> JobRequest:
    """Validates a decoded job object; every error names the field and the rule it breaks."""
    if not isinstance(obj, dict):
        raise ValidationError("body", f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(JOB_FIELDS))
    if unknown:
        raise ValidationError(
            unknown[0], f"is not a known field (allowed: {', '.join(JOB_FIELDS)})"
        )
    prompt = _text(obj, "prompt", required=True)
    assert prompt is not None
    negative = _text(obj, "negative_prompt", required=False) or None

    aspect = obj.get("aspect_ratio", "16:9")
    if aspect not in ASPECT_RATIOS:
        raise ValidationError("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}")

    duration = obj.get("duration", 5)
    # bool is an int and 5.0 == 5: the contract wants a JSON integer, nothing that equals one.
    if isinstance(duration, bool) or not isinstance(duration, int) or duration not in DURATIONS:
        raise ValidationError("duration", "must be 5 or 10 (seconds)")

    guidance = obj.get("guidance_scale")
    if guidance is not None:
        if isinstance(guidance, bool) or not isinstance(guidance, int | float):
            raise ValidationError("guidance_scale", "must be a number between 0 and 1")
        if not math.isfinite(guidance) or not 0 <= guidance <= 1:
            raise ValidationError("guidance_scale", f"must be between 0 and 1, got {guidance}")

    enhance = obj.get("enhance_prompt", False)
    if not isinstance(enhance, bool):
        raise ValidationError("enhance_prompt", "must be true or false")

    job_id = obj.get("job_id")
    if job_id is not None and (not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id)):
        raise ValidationError("job_id", "must match [A-Za-z0-9_-]{1,64}")

    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", "must be a JSON object")
    # Measured as UTF-8 JSON: ASCII escapes would count "é" as 6 bytes and "🎬" as 12.
    compact = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    size = len(compact.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON, got {size}"
        )
    return JobRequest(
        prompt=prompt,
        negative_prompt=negative,
        aspect_ratio=str(aspect),
        duration=int(duration),
        guidance_scale=None if guidance is None else float(guidance),
        enhance_prompt=enhance,
        job_id=job_id,
        metadata=metadata,
    )


def parse_message_body(body: str) -> JobRequest:
    """A JSON job object, or plain text that is the prompt itself with all defaults."""
    if body.lstrip().startswith("{"):
        try:
            decoded = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                "body", f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        return parse_job_object(decoded)
    return parse_job_object({"prompt": body})


def message_job_id(job: JobRequest, message_id: str) -> str:
    """Redeliveries keep their SQS message id, so map to the same job; a new message does not."""
    return job.job_id or f"msg-{message_id}"


def file_job_id(bucket: str, key: str, upload_marker: str, position: int) -> str:
    """Duplicate S3 events of one upload share its sequencer; a re-upload gets a new one."""
    digest = hashlib.sha256(f"{bucket}/{key}@{upload_marker}".encode()).hexdigest()[:24]
    return f"file-{digest}-{position}"


@dataclass(frozen=True)
class FileEntry:
    """One job of a prompt file: its position and either the job or why it was refused."""

    position: int
    label: str
    job: JobRequest | None
    error: ValidationError | None
    #: The `job_id` an invalid entry asked for, when readable: its rejection is sent under it.
    requested_job_id: str | None = None


class PromptFileRejected(PermanentError):
    """The whole prompt file is unusable: wrong type, too big, not UTF-8, not parseable."""

    default_code = "prompt_file_rejected"


PROMPT_FILE_EXTENSIONS = (".txt", ".json", ".jsonl")


def parse_prompt_file(key: str, data: bytes, *, max_bytes: int, max_jobs: int) -> list[FileEntry]:
    """Splits a prompt file (CONTRACT §4) into per-job outcomes naming their line or item."""
    lowered = key.lower()
    if not lowered.endswith(PROMPT_FILE_EXTENSIONS):
        raise PromptFileRejected(
            f"{key}: unsupported file type (use {', '.join(PROMPT_FILE_EXTENSIONS)})"
        )
    if len(data) > max_bytes:
        raise PromptFileRejected(f"{key}: file is {len(data)} bytes, the limit is {max_bytes}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptFileRejected(f"{key}: not UTF-8 (byte {exc.start})") from None

    entries: list[FileEntry] = []
    if lowered.endswith(".txt"):
        entries.append(_entry(1, f"{key}", lambda: parse_job_object({"prompt": text})))
    elif lowered.endswith(".jsonl"):
        # Only "\n" ends a line: splitlines() would also split on U+2028 and friends, which
        # JSON allows raw inside strings, breaking the job and shifting line numbers.
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                entries.append(_entry(number, f"{key} line {number}", _decoder(line), line))
    else:
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptFileRejected(
                f"{key}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        items = decoded if isinstance(decoded, list) else [decoded]
        for index, item in enumerate(items, start=1):
            entries.append(
                _entry(index, f"{key} item {index}", lambda item=item: parse_job_object(item), item)
            )
    if not entries:
        raise PromptFileRejected(f"{key}: holds no job")
    if len(entries) > max_jobs:
        raise PromptFileRejected(f"{key}: holds {len(entries)} jobs, the limit is {max_jobs}")
    return entries


def _decoder(line: str) -> Any:
    def decode() -> JobRequest:
        try:
            decoded = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError("line", f"is not valid JSON ({exc.msg})") from None
        return parse_job_object(decoded)

    return decode


def _entry(position: int, label: str, parse: Any, raw: Any = None) -> FileEntry:
    try:
        return FileEntry(position, label, parse(), None)
    except ValidationError as exc:
        return FileEntry(position, label, None, exc, requested_job_id(raw))


def requested_job_id(raw: Any) -> str | None:
    """The valid `job_id` of a decoded (possibly invalid) job object, if it names one."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    if isinstance(raw, dict):
        job_id = raw.get("job_id")
        if isinstance(job_id, str) and JOB_ID_PATTERN.match(job_id):
            return job_id
    return None


def wavespeed_cost(job: JobRequest | None, *, paid: bool) -> Json:
    """What this job costs: WaveSpeed's price when a task was created, AWS estimated."""
    wavespeed = job.price_usd() if job is not None and paid else 0.0
    return {"wavespeed_usd": wavespeed, "currency": "USD", "paid": paid}


@dataclass
class Notification:
    """The SNS message of CONTRACT §5."""

    job_id: str
    status: str
    input: Json
    source: Json
    request_id: str | None = None
    outputs: list[Json] = field(default_factory=list)
    error: Json | None = None
    metadata: Json = field(default_factory=dict)
    cost: Json = field(default_factory=lambda: {"wavespeed_usd": 0.0})
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        body: Json = {
            "schema": NOTIFICATION_SCHEMA,
            "job_id": self.job_id,
            "status": self.status,
            "request_id": self.request_id,
            "model": MODEL_ID,
            "input": self.input,
            "source": self.source,
            "outputs": self.outputs,
            "error": self.error,
            "metadata": self.metadata,
            "cost": self.cost,
        }
        body.update(self.extra)
        return body
