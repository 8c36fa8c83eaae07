"""Gallery rows from what the pipeline keeps: a job notification, or a jobs-table record."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kling_pipeline.job.notification import job_cost
from kling_pipeline.job.record import JobRecord
from kling_pipeline.types import Json

from .gallery import GalleryRow, GalleryVideo

#: Job message fields shown as parameters, with their labels.
PARAMETERS = (
    ("aspect_ratio", "aspect ratio"),
    ("duration", "duration (s)"),
    ("negative_prompt", "negative prompt"),
    ("guidance_scale", "guidance scale"),
    ("enhance_prompt", "enhance prompt"),
)
#: An output's link: a presigned https URL, a relative path, or None for no link.
Linker = Callable[[Json], str | None]


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _moment(value: object) -> str:
    """An ISO time as a reader wants it (UTC, to the second); anything else as it is."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _parameters(job_input: Json, source: Json) -> tuple[tuple[str, str], ...]:
    pairs = [(label, _shown(job_input[name])) for name, label in PARAMETERS if name in job_input]
    kind = source.get("type")
    if kind == "s3":
        pairs.append(("source", f"s3://{source.get('bucket', '')}/{source.get('key', '')}"))
    elif kind:
        pairs.append(("source", str(kind)))
    return tuple(pairs)


def _timings(sidecar: Json | None, **known: Any) -> tuple[tuple[str, str], ...]:
    """The times known for a job; the sidecar of a stored video has the precise ones."""
    timings: Json = dict((sidecar or {}).get("timings") or {})
    pairs: list[tuple[str, str]] = []
    for name, label in (("created_at", "created"), ("submitted_at", "submitted")):
        value = timings.get(name) or known.get(name)
        if value:
            pairs.append((label, _moment(value)))
    if timings.get("stored_at"):
        pairs.append(("stored", _moment(timings["stored_at"])))
    elif known.get("notified_at"):
        pairs.append(("ended", _moment(known["notified_at"])))
    if timings.get("generation_s"):
        pairs.append(("generation (s)", f"{float(timings['generation_s']):.1f}"))
    return tuple(pairs)


def _videos(outputs: list[Json], link: Linker) -> tuple[GalleryVideo, ...]:
    videos = []
    # A failed job's outputs may name videos left at WaveSpeed (`source_url`, no object):
    # its error message says where they are; the gallery shows stored videos only.
    for output in (o for o in outputs if "source_url" not in o):
        nsfw = bool(output.get("nsfw"))
        size = output.get("size")
        videos.append(
            GalleryVideo(
                name=str(output.get("key") or output.get("uri") or "output"),
                # Quarantined outputs never get a link, whatever the caller would give.
                src=None if nsfw else link(output),
                size=int(size) if isinstance(size, int) else None,
                nsfw=nsfw,
            )
        )
    return tuple(videos)


def _error(error: Json | None) -> tuple[str | None, str | None]:
    if not error:
        return None, None
    return str(error.get("code") or "error"), str(error.get("message") or "")


def _cost(cost: Json) -> tuple[float | None, bool | None]:
    usd = cost.get("wavespeed_usd")
    paid = cost.get("paid")
    return (
        float(usd) if isinstance(usd, int | float) else None,
        paid if isinstance(paid, bool) else None,
    )


def row_from_notification(note: Json, link: Linker, sidecar: Json | None = None) -> GalleryRow:
    """A job as its terminal notification (and, for a stored video, its sidecar) tells it."""
    job_input: Json = note.get("input") or {}
    code, message = _error(note.get("error"))
    usd, paid = _cost(note.get("cost") or {})
    return GalleryRow(
        job_id=str(note.get("job_id") or ""),
        status=str(note.get("status") or ""),
        prompt=str(job_input.get("prompt") or ""),
        parameters=_parameters(job_input, note.get("source") or {}),
        metadata=dict(note.get("metadata") or {}),
        request_id=note.get("request_id"),
        error_code=code,
        error_message=message,
        cost_usd=usd,
        paid=paid,
        timings=_timings(sidecar),
        videos=_videos(list(note.get("outputs") or []), link),
    )


def row_from_record(
    record: JobRecord,
    *,
    outputs: list[Json],
    error: Json | None,
    sidecar: Json | None,
) -> GalleryRow:
    """A job as the jobs table keeps it; `outputs` carry their links (JobReader.outputs)."""
    job_input = record.job_input
    if sidecar and sidecar.get("cost"):
        usd, paid = _cost(sidecar["cost"])
    elif record.terminal:
        # What the job's notification said: WaveSpeed's price once a task was submitted.
        duration = job_input.get("duration")
        usd, paid = _cost(
            job_cost(duration if isinstance(duration, int) else None, paid=record.paid)
        )
    else:
        usd, paid = None, None
    code, message = _error(error)
    metadata = job_input.get("metadata")
    return GalleryRow(
        job_id=record.job_id,
        status=record.status,
        prompt=str(job_input.get("prompt") or ""),
        parameters=_parameters(job_input, record.source),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
        request_id=record.prediction_id,
        error_code=code,
        error_message=message,
        cost_usd=usd,
        paid=paid,
        timings=_timings(
            sidecar,
            created_at=record.created_at,
            submitted_at=record.submitted_at,
            notified_at=record.notified_at,
        ),
        videos=_videos(outputs, lambda output: output.get("url")),
    )


_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an age (`90m`, `24h`, `7d`, `2w`) or an ISO date/time (UTC unless it says)."""
    value = text.strip()
    unit = _UNITS.get(value[-1:].lower())
    if unit is not None and value[:-1].isdigit():
        return now - timedelta(seconds=int(value[:-1]) * unit)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an age like 24h, 90m, 7d or a date like 2025-06-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seen_since(record: JobRecord, since: datetime) -> bool:
    """Whether the job appeared at or after `since` (records without a time are kept out)."""
    try:
        seen = datetime.fromisoformat(record.first_seen)
    except ValueError:
        return False
    return (seen if seen.tzinfo else seen.replace(tzinfo=UTC)) >= since
