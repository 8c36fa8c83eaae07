"""The job gallery page: typed rows in, one self-contained HTML document out.

Everything a row holds may come from a user or the API (prompts, metadata, error messages, job
ids, links), so every value is escaped where it lands, and a link reaches `src`/`href` only when
it is https or relative. A Content-Security-Policy that allows no script at all backs that up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlsplit

#: Status -> badge colour; anything else (an in-flight stage) is drawn as "running".
BADGES = {
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "rejected": "#bc4c00",
}
RUNNING_BADGE = "#0969da"
CSP = "default-src 'none'; style-src 'unsafe-inline'; media-src *; img-src data:"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f3f4f6;color:#1f2328}
header{padding:16px 24px;background:#24292f;color:#fff}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#d0d7de}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px;padding:16px}
article{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;overflow:hidden;
display:flex;flex-direction:column}
article h2{font-size:13px;margin:0;padding:10px 12px;display:flex;gap:8px;align-items:center;
font-family:ui-monospace,monospace;word-break:break-all}
.badge{color:#fff;border-radius:10px;padding:1px 9px;font:600 12px system-ui,sans-serif;
white-space:nowrap}
video,.novideo{width:100%;aspect-ratio:16/9;background:#000;display:block}
.novideo{display:flex;align-items:center;justify-content:center;color:#eee;background:#57606a;
text-align:center;padding:0 16px;box-sizing:border-box}
.body{padding:10px 12px}
.prompt{margin:0 0 8px;white-space:pre-wrap;word-break:break-word;unicode-bidi:plaintext}
.error{background:#ffebe9;border:1px solid #ff818266;border-radius:6px;padding:6px 8px;
margin:0 0 8px;word-break:break-word}
dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:0;font-size:12px}
dt{color:#57606a}dd{margin:0;word-break:break-all}
pre{margin:0;white-space:pre-wrap;word-break:break-all;font-size:11px}
.links{font-size:12px;margin-top:6px;word-break:break-all}
"""


@dataclass(frozen=True)
class GalleryVideo:
    """One stored output: `src` is None when it gets no link (quarantined as NSFW)."""

    name: str
    src: str | None
    size: int | None = None
    nsfw: bool = False


@dataclass(frozen=True)
class GalleryRow:
    """One job as the gallery shows it."""

    job_id: str
    status: str
    prompt: str = ""
    #: (label, value) pairs: aspect ratio, duration, negative prompt, source, ...
    parameters: tuple[tuple[str, str], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    cost_usd: float | None = None
    paid: bool | None = None
    #: (label, value) pairs: submitted, stored, generation seconds, ...
    timings: tuple[tuple[str, str], ...] = ()
    videos: tuple[GalleryVideo, ...] = ()


def safe_link(url: str | None) -> str | None:
    """`url` when it may land in `src`/`href` (https with a host, or a relative path), else None.

    Browsers drop tabs and newlines inside URLs and read a backslash as a slash, so
    `java\\tscript:` or `/\\host` would turn into a script or another host: any control
    character, space or backslash refuses the link outright.
    """
    if not url or any(ord(ch) <= 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme:
        return url if parts.scheme == "https" and parts.netloc else None
    # Protocol-relative ("//host/x") is another host, not a relative path.
    return None if url.startswith("//") or parts.netloc else url


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _badge(status: str) -> str:
    colour = BADGES.get(status, RUNNING_BADGE)
    return f'<span class="badge" style="background:{colour}">{_text(status or "unknown")}</span>'


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    cells = "".join(f"<dt>{_text(label)}</dt><dd>{_text(value)}</dd>" for label, value in pairs)
    return f"<dl>{cells}</dl>" if cells else ""


def _no_video(row: GalleryRow) -> str:
    if row.status == "completed":
        return "video stored without a link (flagged NSFW and quarantined)"
    if row.status in BADGES:
        return f"no video: {row.status}"
    return "no video yet"


def _media(row: GalleryRow) -> str:
    shown = [(video, safe_link(video.src)) for video in row.videos]
    players = [
        f'<video src="{_text(link)}" controls muted playsinline preload="auto"></video>'
        for _video, link in shown
        if link is not None
    ]
    if not players:
        return f'<div class="novideo">{_text(_no_video(row))}</div>'
    return "".join(players)


def _outputs(row: GalleryRow) -> str:
    lines = []
    for video in row.videos:
        size = f" ({video.size} bytes)" if video.size is not None else ""
        link = safe_link(video.src)
        if link is not None:
            lines.append(f'<div><a href="{_text(link)}">{_text(video.name)}</a>{_text(size)}</div>')
        else:
            if video.nsfw:
                why = "quarantined, no link"
            else:
                why = (
                    "link not shown (only https or relative links are)" if video.src else "no link"
                )
            lines.append(f"<div>{_text(video.name)}{_text(size)}: {_text(why)}</div>")
    return f'<div class="links">{"".join(lines)}</div>' if lines else ""


def _cost(row: GalleryRow) -> str:
    if row.cost_usd is None:
        return "unknown"
    charged = "" if row.paid is None else (" (charged)" if row.paid else " (not charged)")
    return f"${row.cost_usd:.2f}{charged}"


def _card(row: GalleryRow) -> str:
    error = ""
    if row.error_code or row.error_message:
        error = (
            f'<p class="error"><strong>{_text(row.error_code or "error")}</strong>: '
            f"{_text(row.error_message or '')}</p>"
        )
    details = [*row.parameters, ("cost", _cost(row))]
    if row.request_id:
        details.append(("prediction", row.request_id))
    details.extend(row.timings)
    metadata = ""
    if row.metadata:
        encoded = json.dumps(row.metadata, ensure_ascii=False, indent=1, sort_keys=True)
        metadata = f"<details><summary>metadata</summary><pre>{_text(encoded)}</pre></details>"
    prompt = row.prompt or "(no prompt)"
    return (
        f'<article class="job" data-status="{_text(row.status)}">'
        f"<h2>{_badge(row.status)}<span>{_text(row.job_id)}</span></h2>"
        f"{_media(row)}"
        f'<div class="body"><p class="prompt">{_text(prompt)}</p>{error}'
        f"{_pairs(details)}{metadata}{_outputs(row)}</div></article>"
    )


def render_gallery(rows: Sequence[GalleryRow], *, title: str, subtitle: str = "") -> str:
    """The whole page: one card per row, in the order given."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no jobs"
    lead = f"{len(rows)} job(s): {summary}" + (f" · {subtitle}" if subtitle else "")
    cards = "\n".join(_card(row) for row in rows)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_text(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><header><h1>{_text(title)}</h1><p>{_text(lead)}</p></header>\n"
        f"<main>\n{cards}\n</main></body></html>\n"
    )
