"""Unit tests: the gallery page escapes everything from users and the API, and shows every job."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from kling_cli.gallery import GalleryRow, GalleryVideo, render_gallery, safe_link
from kling_cli.gallery_rows import parse_since, row_from_notification, row_from_record
from kling_cli.jobs import JobReader
from kling_pipeline.errors import ErrorDetail
from kling_pipeline.job.record import JobRecord, Outcome, Stage

#: Markup, quoting, entity, template and unicode tricks, each a class of hostile text.
FRAGMENTS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</video><script>alert(2)</script>",
    "</p></article></main><h1>owned</h1>",
    "<video src=javascript:alert(3)>",
    "<a href='javascript:alert(4)'>click</a>",
    "<!-- ",
    " -->",
    "<![CDATA[x]]>",
    "&amp;&lt;&#x3C;script&#62;",
    '"',
    "'",
    "`",
    "\u202eevil.mp4\u202c",
    "\u200f\u2067rtl\u2069",
    "emoji \U0001f3ac zero\u200bwidth",
    "<style>body{display:none}</style>",
    "{{x}} ${x} $x %s",
    "javascript:alert(5)",
    "</textarea></pre></details>",
    "\x00nul\x0bvt",
)
#: Links an attacker (or a broken API answer) could hand over; none may reach src/href.
HOSTILE_URLS = (
    "javascript:alert(1)",
    " JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:video/mp4;base64,AAAA",
    "//evil.example/v.mp4",
    "/\\evil.example/v.mp4",
    "\\\\evil.example\\v.mp4",
    "http://plain.example/v.mp4",
    "file:///etc/passwd",
    "https:///no-host",
    "https://ok.example/v.mp4\x00",
    "https://ok.example/v\u202e.mp4 x",
    "",
)
#: Links that may land, some with characters that must be escaped inside the attribute.
SAFE_URLS = (
    "https://bucket.s3.amazonaws.com/videos/a/output-1.mp4?X-Amz-Signature=abc&X-Amz-Expires=60",
    "https://ok.example/v.mp4?q=\"><script>alert(1)</script>&x='",
    "videos/job-1/output-1.mp4",
    "videos/%3Cscript%3E/o\"'<>.mp4",
    "/absolute/on/this/host.mp4",
)

#: Every element the page template itself writes.
TEMPLATE_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "header", "h1", "p", "main"),
    *("article", "h2", "span", "video", "div", "strong", "dl", "dt", "dd", "details"),
    *("summary", "pre", "a"),
}


def hostile_corpus(seed: int = 15, count: int = 60) -> list[str]:
    """Every fragment alone, then random mixes of fragments and ordinary words."""
    rng = random.Random(seed)
    words = ("a red fox", "snow", "\u05e9\u05dc\u05d5\u05dd", "\u00e9t\u00e9", "", " ")
    mixed = [
        "".join(rng.choice(FRAGMENTS + words) for _ in range(rng.randint(2, 5)))
        for _ in range(count)
    ]
    return [*FRAGMENTS, *mixed]


@dataclass
class Parsed(HTMLParser):
    """The page as a browser's tokenizer sees it: tags, attributes, and each prompt's text."""

    tokens: list[tuple[str, ...]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    _in_prompt: bool = False

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tokens.append(("start", tag, *sorted(name for name, _ in attrs)))
        self.links.extend(v or "" for name, v in attrs if name in ("src", "href"))
        if tag == "p" and ("class", "prompt") in attrs:
            self._in_prompt = True
            self.prompts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(("end", tag))
        self._in_prompt = False

    def handle_data(self, data: str) -> None:
        if self._in_prompt:
            self.prompts[-1] += data

    def handle_comment(self, data: str) -> None:
        self.tokens.append(("comment", data))

    def handle_decl(self, decl: str) -> None:
        self.tokens.append(("decl", decl))

    def unknown_decl(self, data: str) -> None:
        self.tokens.append(("unknown", data))


def parse(page: str) -> Parsed:
    parsed = Parsed()
    parsed.feed(page)
    parsed.close()
    return parsed


def row_of(text: str, url: str, status: str = "completed") -> GalleryRow:
    """A row with `text` in every field a user or the API fills, and one video at `url`."""
    return GalleryRow(
        job_id=text,
        status=status,
        prompt=text,
        parameters=((text, text), ("negative prompt", text)),
        metadata={text: text, "nested": [text, {"k": text}]},
        request_id=text,
        error_code=text,
        error_message=text,
        cost_usd=1.3,
        paid=True,
        timings=(("submitted", text),),
        videos=(
            GalleryVideo(name=text, src=url, size=1),
            GalleryVideo(name=text, src=None, nsfw=True),
        ),
    )


def hostile_rows() -> list[GalleryRow]:
    urls = HOSTILE_URLS + SAFE_URLS
    statuses = ("completed", "failed", "rejected", "running", '"><script>x</script>')
    return [
        row_of(text, urls[i % len(urls)], statuses[i % len(statuses)])
        for i, text in enumerate(hostile_corpus())
    ]


def benign_twin(row: GalleryRow) -> GalleryRow:
    """The same row with every text plain, and a link exactly as acceptable as the original."""
    url = row.videos[0].src
    twin_url = "https://ok.example/v.mp4" if safe_link(url) else "javascript:void(0)"
    return replace(row_of("x", twin_url, "completed"), status=row.status)


def test_page_structure_comes_from_the_template_only_when_every_field_is_hostile() -> None:
    # Given rows whose every user or API field is hostile, and their plain twins
    rows = hostile_rows()
    twins = [benign_twin(row) for row in rows]

    # When both are rendered and parsed as a browser would tokenize them
    hostile = parse(render_gallery(rows, title="<title>x</title>\"'"))
    plain = parse(render_gallery(twins, title="x"))

    # Then they have the very same elements and attribute names: no data became markup
    assert [t for t in hostile.tokens if t[0] != "comment"] == [
        t for t in plain.tokens if t[0] != "comment"
    ]
    assert not [t for t in hostile.tokens if t[0] in ("comment", "unknown")]
    tags = {t[1] for t in hostile.tokens if t[0] in ("start", "end")}
    assert tags <= TEMPLATE_TAGS
    assert not [t for t in hostile.tokens if any(name.startswith("on") for name in t[2:])]


def test_prompts_read_back_verbatim_when_they_hold_markup() -> None:
    # Given rows whose prompts are the hostile corpus
    corpus = hostile_corpus()
    rows = [row_of(text, SAFE_URLS[0]) for text in corpus]

    # When the page is parsed
    parsed = parse(render_gallery(rows, title="t"))

    # Then each prompt is shown as text, exactly as written (empty ones get a placeholder)
    assert parsed.prompts == [text or "(no prompt)" for text in corpus]


def test_only_https_or_relative_links_land_in_src_or_href_when_links_are_hostile() -> None:
    # Given rows carrying every hostile and every acceptable link
    rows = hostile_rows()

    # When the page is parsed
    parsed = parse(render_gallery(rows, title="t"))

    # Then every src/href is one of the acceptable links, as given, and none is hostile
    assert parsed.links
    assert set(parsed.links) <= set(SAFE_URLS)
    for link in parsed.links:
        assert link.startswith("https://") or (":" not in link.split("/")[0])
        assert not link.startswith("//")


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_safe_link_refuses_scripts_other_schemes_and_hosts_when_url_is_hostile(url: str) -> None:
    assert safe_link(url) is None


@pytest.mark.parametrize("url", SAFE_URLS)
def test_safe_link_keeps_url_as_given_when_https_or_relative(url: str) -> None:
    assert safe_link(url) == url


def test_every_job_gets_a_card_with_its_reason_when_failed_or_rejected() -> None:
    # Given a completed, a failed and a rejected job as their notifications tell them
    notes = [
        notification("ok", "completed", outputs=[output("videos/ok/output-1.mp4")]),
        notification("bad", "failed", error={"code": "generation_failed", "message": "boom"}),
        notification("rej", "rejected", error={"code": "invalid_job", "message": "prompt: empty"}),
    ]

    # When the gallery is rendered with relative links
    rows = [row_from_notification(note, lambda o: o["key"]) for note in notes]
    page = render_gallery(rows, title="run")
    parsed = parse(page)

    # Then three cards, one video (the completed job's), and each failure's code and message
    assert sum(1 for t in parsed.tokens if t[:2] == ("start", "article")) == 3
    assert sum(1 for t in parsed.tokens if t[:2] == ("start", "video")) == 1
    assert "videos/ok/output-1.mp4" in parsed.links
    for text in ("generation_failed", "boom", "invalid_job", "prompt: empty", "no video: failed"):
        assert text in page


def test_failed_job_shows_no_video_when_its_outputs_are_left_at_wavespeed() -> None:
    # Given a failed job whose one output exists at WaveSpeed but was not stored
    unstored = {
        "index": 1,
        "source_url": "https://d2p7pge43lyniu.cloudfront.net/o.mp4",
        "source_expires_at": "2026-12-07T00:00:00+00:00",
    }
    error = {"code": "not_mp4", "message": "not an MP4; the video is still at WaveSpeed"}
    note = notification("left", "failed", outputs=[unstored], error=error)

    # When its row is built with a linker that would link anything it is given
    row = row_from_notification(note, lambda o: "https://ok.example/" + str(o.get("key")))

    # Then the card has no video (nothing is stored) and says why
    assert row.videos == ()
    assert "still at WaveSpeed" in render_gallery([row], title="t")


def test_quarantined_output_gets_no_link_when_the_linker_offers_one() -> None:
    # Given a completed job whose only output was flagged NSFW
    note = notification("nsfw", "completed", outputs=[output("quarantine/nsfw/o.mp4", nsfw=True)])

    # When its row is built with a linker that would link anything
    row = row_from_notification(note, lambda o: "https://ok.example/" + o["key"])
    parsed = parse(render_gallery([row], title="t"))

    # Then no video element and no link: the page says it is quarantined
    assert parsed.links == []
    assert row.videos[0].src is None
    assert "quarantined" in render_gallery([row], title="t")


def test_record_row_shows_refund_free_cost_and_reason_when_job_was_rejected() -> None:
    # Given a job record refused before submission
    record = JobRecord(
        job_id="r1",
        job_input={"prompt": "p", "duration": 5},
        terminal_status=Outcome.REJECTED,
        terminal_error=ErrorDetail("invalid_job", "duration: must be 5 or 10"),
        notified_at="2025-06-01T10:00:00+00:00",
    )

    # When its row is built
    row = row_from_record(record, outputs=[], error=JobReader.error(record), sidecar=None)

    # Then it is rejected, cost nothing, says why, and when it ended
    assert (row.status, row.cost_usd, row.paid) == ("rejected", 0.0, False)
    assert (row.error_code, row.error_message) == ("invalid_job", "duration: must be 5 or 10")
    assert ("ended", "2025-06-01 10:00:00 UTC") in row.timings


def test_record_row_takes_cost_and_timings_from_sidecar_when_video_was_stored() -> None:
    # Given a completed job's record and the sidecar the finalize step wrote
    record = JobRecord(
        job_id="c1",
        stage=Stage.RUNNING,
        prediction_id="pred",
        job_input={"prompt": "fox", "duration": 10, "aspect_ratio": "9:16"},
        terminal_status=Outcome.COMPLETED,
        notified_at="2025-06-01T10:05:00+00:00",
    )
    sidecar = {
        "cost": {"wavespeed_usd": 2.6, "paid": True},
        "timings": {
            "submitted_at": "2025-06-01T10:00:00+00:00",
            "stored_at": "2025-06-01T10:04:00+00:00",
            "generation_s": 212.34,
        },
    }

    # When its row is built
    row = row_from_record(record, outputs=[], error=None, sidecar=sidecar)

    # Then cost, parameters and timings are the stored ones
    assert (row.cost_usd, row.paid) == (2.6, True)
    assert ("aspect ratio", "9:16") in row.parameters
    assert ("stored", "2025-06-01 10:04:00 UTC") in row.timings
    assert ("generation (s)", "212.3") in row.timings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_since_reads_an_age_when_given_units(text: str, expected: timedelta) -> None:
    now = datetime(2025, 6, 10, tzinfo=UTC)
    assert parse_since(text, now) == now - expected


def test_since_reads_dates_as_utc_when_no_zone_is_given() -> None:
    now = datetime(2025, 6, 10, tzinfo=UTC)
    assert parse_since("2025-06-01", now) == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_since("2025-06-01T12:00:00+02:00", now) == datetime(2025, 6, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "24", "h", "-3h", "2025-13-01"])
def test_since_refuses_with_examples_when_unreadable(text: str) -> None:
    with pytest.raises(ValueError, match="24h"):
        parse_since(text, datetime(2025, 6, 10, tzinfo=UTC))


def output(key: str, *, nsfw: bool = False) -> dict[str, object]:
    return {"bucket": "b", "key": key, "uri": f"s3://b/{key}", "size": 10, "nsfw": nsfw}


def notification(
    job_id: str,
    status: str,
    *,
    outputs: list[dict[str, object]] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, object]:
    return {
        "job_id": job_id,
        "status": status,
        "input": {"prompt": f"prompt of {job_id}", "duration": 5, "aspect_ratio": "16:9"},
        "source": {"type": "sqs"},
        "outputs": outputs or [],
        "error": error,
        "metadata": {},
        "cost": {"wavespeed_usd": 1.3 if status != "rejected" else 0.0, "paid": True},
    }
