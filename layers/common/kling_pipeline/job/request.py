"""The job message: validated into a JobRequest, identified into a Job that can be paid for."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .. import strict_json
from ..errors import ValidationError
from ..types import Json

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


def fingerprint_of(text: str) -> str:
    """A short stable digest of a request: equal requests (or equal raw bodies) share it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def message_job_id(body: str) -> str:
    """The job id of a message that names none, derived from its exact body.

    Not from the SQS message id: a redrive from the dead-letter queue, a re-send of a message
    SQS parked, or a second send of the identical body all get new message ids, and each would
    otherwise pay again. Sending the identical body twice is therefore one job.
    """
    return f"msg-{fingerprint_of(body)}"


def price_usd(duration: int) -> float:
    """WaveSpeed's price of one Kling video of `duration` seconds."""
    return round(PRICE_PER_5S_USD * duration / 5, 2)


@dataclass(frozen=True)
class JobRequest:
    """One validated job message; `job_id` is None until its delivery gives it one."""

    prompt: str
    negative_prompt: str | None = None
    aspect_ratio: str = "16:9"
    duration: int = 5
    guidance_scale: float | None = None
    enhance_prompt: bool = False
    job_id: str | None = None
    metadata: Json = field(default_factory=dict)

    def identified(self, fallback_id: str) -> Job:
        """The job under its own `job_id`, or `fallback_id` when the message named none."""
        return Job(self.job_id or fallback_id, self)

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
        """A job message body that parses back into this request."""
        message = self.input_view()
        if self.job_id is not None:
            message["job_id"] = self.job_id
        if self.metadata:
            message["metadata"] = self.metadata
        return message


@dataclass(frozen=True)
class Job:
    """A job with the id that makes it idempotent: one id, at most one paid submission."""

    job_id: str
    request: JobRequest

    @property
    def input(self) -> Json:
        return self.request.input_view()

    @property
    def metadata(self) -> Json:
        return self.request.metadata

    def price_usd(self) -> float:
        return price_usd(self.request.duration)

    def to_message(self) -> Json:
        """The job message that redelivers this very job (used for prompt-file fan-out)."""
        return {**self.request.to_message(), "job_id": self.job_id}

    @property
    def fingerprint(self) -> str:
        """What a second message under this job id must match to be the same request."""
        return fingerprint_of(json.dumps(self.to_message(), sort_keys=True))

    def api_payload(self, prompt: str | None = None) -> Json:
        """The body WaveSpeed's Kling endpoint expects; `prompt` overrides with an enhanced one."""
        request = self.request
        body: Json = {
            "prompt": prompt if prompt is not None else request.prompt,
            "aspect_ratio": request.aspect_ratio,
            "duration": request.duration,
        }
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.guidance_scale is not None:
            body["guidance_scale"] = request.guidance_scale
        return body


def has_visible_text(text: str) -> bool:
    """True when `text` shows something: a letter, mark, number, punctuation or symbol.

    Whitespace and format characters (zero-width spaces and joiners, bidi marks, soft hyphens)
    render as nothing, so a prompt made only of them would pay for a video of nothing asked.
    """
    return any(unicodedata.category(char)[0] in "LMNPS" for char in text)


def _text(obj: Json, name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(name, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    trimmed = value.strip()
    if required and not has_visible_text(trimmed):
        raise ValidationError(name, "must not be empty (it needs at least one visible character)")
    if len(trimmed) > MAX_PROMPT_CHARS:
        raise ValidationError(
            name, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(trimmed)}"
        )
    return trimmed


def _guidance(obj: Json) -> float | None:
    guidance = obj.get("guidance_scale")
    if guidance is None:
        return None
    if isinstance(guidance, bool) or not isinstance(guidance, int | float):
        raise ValidationError("guidance_scale", "must be a number between 0 and 1")
    if not math.isfinite(guidance) or not 0 <= guidance <= 1:
        raise ValidationError("guidance_scale", f"must be between 0 and 1, got {guidance}")
    return float(guidance)


def _metadata(obj: Json) -> Json:
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
    return metadata


def parse_job_object(obj: Any) -> JobRequest:
    """Validates a decoded job object; every error names the field and the rule it breaks."""
    if not isinstance(obj, dict):
        raise ValidationError("body", f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(JOB_FIELDS))
    if unknown:
        raise ValidationError(
            strict_json.field_name(str(unknown[0])),
            f"is not a known field (allowed: {', '.join(JOB_FIELDS)})",
        )
    prompt = _text(obj, "prompt", required=True) or ""
    negative = _text(obj, "negative_prompt", required=False) or None

    aspect = obj.get("aspect_ratio", "16:9")
    if aspect not in ASPECT_RATIOS:
        raise ValidationError("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}")

    duration = obj.get("duration", 5)
    # bool is an int and 5.0 == 5: the contract wants a JSON integer, nothing that equals one.
    if isinstance(duration, bool) or not isinstance(duration, int) or duration not in DURATIONS:
        raise ValidationError("duration", "must be 5 or 10 (seconds)")

    guidance = _guidance(obj)
    enhance = obj.get("enhance_prompt", False)
    if not isinstance(enhance, bool):
        raise ValidationError("enhance_prompt", "must be true or false")

    job_id = obj.get("job_id")
    if job_id is not None and (not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id)):
        raise ValidationError("job_id", "must match [A-Za-z0-9_-]{1,64}")
    return JobRequest(
        prompt=prompt,
        negative_prompt=negative,
        aspect_ratio=str(aspect),
        duration=int(duration),
        guidance_scale=guidance,
        enhance_prompt=enhance,
        job_id=job_id,
        metadata=_metadata(obj),
    )


def parse_message_body(body: str) -> JobRequest:
    """A strict JSON job object, or plain text that is the prompt itself with all defaults.

    A body is plain text only when it neither looks like JSON nor decodes as JSON: a JSON
    array, string or number (or an object behind a byte-order mark) is an error, never a
    prompt, so its `job_id` cannot be lost and paid for again on a resend.
    """
    if strict_json.looks_like_json(body) or strict_json.decodes_as_json(body):
        return parse_job_object(strict_json.loads(body))
    return parse_job_object({"prompt": body})


def requested_job_id(raw: Any) -> str | None:
    """The valid `job_id` of a decoded (possibly invalid) job object, if it names one."""
    if isinstance(raw, str):
        try:
            raw = strict_json.loads(raw)
        except ValidationError:
            return None
    if isinstance(raw, dict):
        job_id = raw.get("job_id")
        if isinstance(job_id, str) and JOB_ID_PATTERN.match(job_id):
            return job_id
    return None


def echo_of(body: str) -> Json:
    """What a rejected message asked for, as far as it can be read, bounded for echoing."""
    if not (strict_json.looks_like_json(body) or strict_json.decodes_as_json(body)):
        return {"prompt": strict_json.clip(body, max_chars=MAX_PROMPT_CHARS)}
    try:
        decoded = strict_json.loads(body)
    except ValidationError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    clipped = strict_json.clip(decoded, max_chars=MAX_PROMPT_CHARS)
    return clipped if isinstance(clipped, dict) else {}
