"""Prompt files (.txt, .json, .jsonl): split into one outcome per job, naming its line or item."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .. import strict_json
from ..errors import PermanentError, ValidationError
from .request import JobRequest, parse_job_object, requested_job_id

PROMPT_FILE_EXTENSIONS = (".txt", ".json", ".jsonl")


class PromptFileRejected(PermanentError):
    """The whole prompt file is unusable: wrong type, too big, not UTF-8, not parseable."""

    default_code = "prompt_file_rejected"


@dataclass(frozen=True)
class FileEntry:
    """One job of a prompt file: its position and either the job or why it was refused."""

    position: int
    label: str
    job: JobRequest | None
    error: ValidationError | None
    #: The `job_id` an invalid entry asked for, when readable: its rejection is sent under it.
    requested_job_id: str | None = None


def file_job_id(bucket: str, key: str, upload_marker: str, position: int) -> str:
    """Duplicate S3 events of one upload share its marker (the object version, else the
    event's sequencer or eTag); a re-upload is a new version, hence new job ids."""
    digest = hashlib.sha256(f"{bucket}/{key}@{upload_marker}".encode()).hexdigest()[:24]
    return f"file-{digest}-{position}"


def position_name(key: str) -> str:
    """What one job of the file is called in its source: a line, or an item of a list."""
    return "line" if key.lower().endswith(".jsonl") else "item"


def parse_prompt_file(key: str, data: bytes, *, max_bytes: int, max_jobs: int) -> list[FileEntry]:
    """Splits a prompt file into per-job outcomes naming their line or item."""
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
            decoded = strict_json.loads(text, what="file")
        except ValidationError as exc:
            raise PromptFileRejected(f"{key}: {exc.message}") from None
        items: list[Any] = decoded if isinstance(decoded, list) else [decoded]
        for index, item in enumerate(items, start=1):
            entries.append(
                _entry(index, f"{key} item {index}", partial(parse_job_object, item), item)
            )
    if not entries:
        raise PromptFileRejected(f"{key}: holds no job")
    if len(entries) > max_jobs:
        raise PromptFileRejected(f"{key}: holds {len(entries)} jobs, the limit is {max_jobs}")
    return entries


def _decoder(line: str) -> Callable[[], JobRequest]:
    def decode() -> JobRequest:
        # Strict: one parse bomb (a 5,000-digit number, deep nesting) fails its own line only.
        return parse_job_object(strict_json.loads(line, what="line"))

    return decode


def _entry(
    position: int, label: str, parse: Callable[[], JobRequest], raw: Any = None
) -> FileEntry:
    try:
        return FileEntry(position, label, parse(), None)
    except ValidationError as exc:
        return FileEntry(position, label, None, exc, requested_job_id(raw))
