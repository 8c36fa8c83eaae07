"""Unit tests: job message validation, prompt files and job id derivation."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from kling_pipeline.errors import PermanentError, ValidationError
from kling_pipeline.job.prompt_file import (
    FileEntry,
    PromptFileRejected,
    file_job_id,
    parse_prompt_file,
)
from kling_pipeline.job.request import JOB_FIELDS, JobRequest, parse_job_object, parse_message_body
from kling_pipeline.submit.intake import Admit, ReceivedMessage, take_in

MAX_BYTES = 64 * 1024
MAX_JOBS = 5


def rejection(body: str) -> ValidationError:
    """Parses a message body that must be refused and returns the error."""
    with pytest.raises(ValidationError) as caught:
        parse_message_body(body)
    return caught.value


def job_body(**fields: Any) -> str:
    return json.dumps({"prompt": "a red fox in the snow", **fields})


def file_entries(key: str, data: bytes, *, max_jobs: int = MAX_JOBS) -> list[FileEntry]:
    return parse_prompt_file(key, data, max_bytes=MAX_BYTES, max_jobs=max_jobs)


# ------------------------------------------------------------------------------ valid messages


def test_defaults_apply_when_only_prompt_given() -> None:
    # Given a body with just a prompt
    body = json.dumps({"prompt": "  a red fox in the snow  "})

    # When parsing it
    job = parse_message_body(body)

    # Then the prompt is trimmed and every default of the contract applies
    assert job == JobRequest(prompt="a red fox in the snow")
    assert (job.aspect_ratio, job.duration, job.enhance_prompt) == ("16:9", 5, False)
    assert job.negative_prompt is None and job.guidance_scale is None and job.job_id is None
    assert job.metadata == {}


def test_every_field_kept_when_all_valid() -> None:
    # Given a body using every field of the contract
    body = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "aspect_ratio": "9:16",
        "duration": 10,
        "guidance_scale": 1,
        "enhance_prompt": True,
        "job_id": "Job_42-a",
        "metadata": {"customer": "acme", "n": [1, 2]},
    }
    assert set(body) == set(JOB_FIELDS)

    # When parsing it
    job = parse_message_body(json.dumps(body))

    # Then each value survives validation unchanged
    assert job == JobRequest(
        prompt="a lighthouse at dusk",
        negative_prompt="blurry",
        aspect_ratio="9:16",
        duration=10,
        guidance_scale=1.0,
        enhance_prompt=True,
        job_id="Job_42-a",
        metadata={"customer": "acme", "n": [1, 2]},
    )


@pytest.mark.parametrize("prompt", ["x", "p" * 2500, " " * 10 + "q" * 2500 + "\n"])
def test_prompt_accepted_when_within_bounds_after_trim(prompt: str) -> None:
    # Given / When a prompt of 1 or 2500 characters once trimmed
    job = parse_message_body(job_body(prompt=prompt))

    # Then it is accepted, trimmed
    assert job.prompt == prompt.strip()


def test_plain_text_body_is_the_prompt_when_not_json_at_all() -> None:
    # Given a body that is not JSON of any kind
    # When parsing it
    job = parse_message_body("  a cat surfing a wave\n")

    # Then the trimmed text is the prompt and every default applies
    assert job == JobRequest(prompt="a cat surfing a wave")


@pytest.mark.parametrize(
    "body",
    [
        '["not", "an", "object"]',
        '"a quoted prompt"',
        "42",
        "null",
        '\ufeff{"prompt": "x", "duration": 7}',
        ' \ufeff{"prompt": "x", "duration": 7}',  # whitespace before the BOM
        '\r\n\ufeff\ufeff [{"prompt": "x"}]',
        '[{"prompt": "a fox", "job_id": "j1"}]',
    ],
)
def test_json_body_that_is_not_a_valid_job_object_is_rejected_never_a_prompt(body: str) -> None:
    # Given a body that is JSON but not a valid job object (or an object behind a BOM)
    # When / Then parsing it is an error, never a plain-text prompt that would pay
    with pytest.raises(ValidationError):
        parse_message_body(body)


def test_plain_text_body_rejected_when_blank() -> None:
    # Given / When a body of whitespace only
    error = rejection("   \n\t ")

    # Then the prompt rule is named
    assert error.field == "prompt"
    assert "empty" in error.rule


@pytest.mark.parametrize("guidance", [0, 0.0, 0.5, 1, 1.0])
def test_guidance_scale_accepted_when_within_zero_to_one(guidance: float) -> None:
    # Given / When a guidance scale on or within the bounds
    job = parse_message_body(job_body(guidance_scale=guidance))

    # Then it is kept as a float
    assert job.guidance_scale == float(guidance)
    assert isinstance(job.guidance_scale, float)


# ------------------------------------------------------------------------------ rejected messages


@pytest.mark.parametrize(
    ("body", "field", "rule_words"),
    [
        (job_body(prompt=""), "prompt", "empty"),
        (job_body(prompt="   \n "), "prompt", "empty"),
        (json.dumps({"aspect_ratio": "1:1"}), "prompt", "required"),
        (job_body(prompt=None), "prompt", "required"),
        (job_body(prompt=42), "prompt", "string"),
        (job_body(prompt="p" * 2501), "prompt", "2500"),
        (job_body(prompt="  " + "p" * 2501 + "  "), "prompt", "2500"),
        (job_body(negative_prompt="n" * 2501), "negative_prompt", "2500"),
        (job_body(negative_prompt=["blurry"]), "negative_prompt", "string"),
        (job_body(aspect_ratio="4:3"), "aspect_ratio", "16:9"),
        (job_body(aspect_ratio="16/9"), "aspect_ratio", "one of"),
        (job_body(aspect_ratio=None), "aspect_ratio", "one of"),
        (job_body(duration=7), "duration", "5 or 10"),
        (job_body(duration="5"), "duration", "5 or 10"),
        (job_body(duration=True), "duration", "5 or 10"),
        (job_body(duration=5.0), "duration", "5 or 10"),
        (job_body(duration=None), "duration", "5 or 10"),
        (job_body(guidance_scale=-0.1), "guidance_scale", "between 0 and 1"),
        (job_body(guidance_scale=1.1), "guidance_scale", "between 0 and 1"),
        (job_body(guidance_scale=True), "guidance_scale", "number"),
        (job_body(guidance_scale="0.5"), "guidance_scale", "number"),
        ('{"prompt": "fox", "guidance_scale": NaN}', "guidance_scale", "not a JSON number"),
        ('{"prompt": "fox", "metadata": {"w": Infinity}}', "w", "not a JSON number"),
        ('{"prompt": "fox", "duration": 5, "duration": 10}', "duration", "more than once"),
        ('{"prompt": "fox", "guidance_scale": 1' + "0" * 400 + "}", "body", "digits"),
        ('{"prompt": "fox", "guidance_scale": Infinity}', "guidance_scale", "not a JSON number"),
        (job_body(enhance_prompt="yes"), "enhance_prompt", "true or false"),
        (job_body(enhance_prompt=1), "enhance_prompt", "true or false"),
        (job_body(enhance_prompt=None), "enhance_prompt", "true or false"),
        (job_body(metadata=["a"]), "metadata", "object"),
        (job_body(metadata="customer=acme"), "metadata", "object"),
        (job_body(metadata={"blob": "m" * 2048}), "metadata", "2048 bytes"),
        (job_body(job_id=""), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id="j" * 65), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id="job/1"), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id="job 1"), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id="job.1"), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id="jöb"), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id="job1\n"), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(job_id=123), "job_id", "[A-Za-z0-9_-]{1,64}"),
        (job_body(promt="typo"), "promt", "not a known field"),
        (json.dumps({"promt": "a fox"}), "promt", "not a known field"),
        (job_body(Prompt="case matters"), "Prompt", "not a known field"),
    ],
)
def test_job_rejected_naming_field_and_rule_when_breaking_contract(
    body: str, field: str, rule_words: str
) -> None:
    # Given a job body breaking one rule of the contract
    # When parsing it
    error = rejection(body)

    # Then the error is permanent, names the field, and states the rule in its message
    assert isinstance(error, PermanentError)
    assert error.code == "invalid_job"
    assert error.field == field
    assert rule_words in error.rule
    assert error.message.startswith(f"{field}: ")
    assert error.detail().to_json() == {
        "code": "invalid_job",
        "message": f"{field}: {error.rule}",
        "field": field,
    }
    # ... and renders as the JSON the workflow's failure step decodes
    assert json.loads(str(error)) == {"code": "invalid_job", "message": error.message}


def test_metadata_accepted_when_exactly_at_size_limit() -> None:
    # Given metadata whose compact JSON is exactly 2048 bytes ({"k":"…"} is 8 bytes of framing)
    metadata = {"k": "m" * (2048 - 8)}
    assert len(json.dumps(metadata, separators=(",", ":"))) == 2048

    # When parsing / Then it is kept; one byte more is refused
    assert parse_message_body(job_body(metadata=metadata)).metadata == metadata
    too_big = rejection(job_body(metadata={"k": "m" * (2048 - 7)}))
    assert too_big.field == "metadata"


def test_metadata_measured_as_utf8_json_when_non_ascii() -> None:
    # Given metadata of 1000 "é" (2 bytes each in UTF-8, 6 as a \u escape): 2008 bytes as JSON
    metadata = {"title": "é" * 1000}

    # When parsing / Then it fits the 2 KiB limit; 1100 of them (2208 bytes) do not
    assert parse_message_body(job_body(metadata=metadata)).metadata == metadata
    assert rejection(job_body(metadata={"title": "é" * 1100})).field == "metadata"


def test_metadata_rejected_without_crash_when_holding_lone_surrogate() -> None:
    # Given metadata with an escaped lone surrogate (valid JSON, not encodable UTF-8)
    body = '{"prompt": "fox", "metadata": {"k": "\\ud800"}}'

    # When parsing / Then it is refused as invalid Unicode, never published later
    with pytest.raises(ValidationError, match="surrogate"):
        parse_message_body(body)


@pytest.mark.parametrize("job_id", ["a", "A" * 64, "abc_DEF-123", "-_-"])
def test_job_id_accepted_when_matching_pattern(job_id: str) -> None:
    # Given / When a job id of 1..64 allowed characters / Then it is kept
    assert parse_message_body(job_body(job_id=job_id)).job_id == job_id


@pytest.mark.parametrize(
    "body",
    ['{"prompt": "fox"', '{"prompt": "fox",}', "{prompt: fox}", '{"prompt": "fox"} trailing'],
)
def test_malformed_json_rejected_naming_body_when_object_unparseable(body: str) -> None:
    # Given a body starting with "{" that is not valid JSON
    # When parsing it
    error = rejection(body)

    # Then the body field and the JSON problem (with position) are named
    assert error.field == "body"
    assert "not valid JSON" in error.rule
    assert "line 1 column" in error.rule


@pytest.mark.parametrize("decoded", [["a"], "a fox", 5, None, True])
def test_non_object_json_rejected_when_parsed_as_job(decoded: Any) -> None:
    # Given a decoded JSON value that is not an object
    # When validating it as a job
    with pytest.raises(ValidationError) as caught:
        parse_job_object(decoded)

    # Then the body is named with the rule and the type found
    assert caught.value.field == "body"
    assert "must be a JSON object" in caught.value.rule


# ------------------------------------------------------------------------------ prompt files


def test_txt_file_is_one_prompt_when_uploaded() -> None:
    # Given a UTF-8 text file (with a BOM and several lines)
    data = "\ufeffA misty forest at dawn,\nslow dolly shot.\n".encode()

    # When parsing it
    (entry,) = file_entries("prompts/forest.TXT", data)

    # Then the whole file is one prompt with every default
    assert entry.error is None
    assert entry.job == JobRequest(prompt="A misty forest at dawn,\nslow dolly shot.")
    assert (entry.position, entry.label) == (1, "prompts/forest.TXT")


def test_json_file_is_one_job_when_holding_an_object() -> None:
    # Given a .json file with one job object
    data = json.dumps({"prompt": "a comet", "duration": 10}).encode()

    # When parsing it / Then it is one valid job
    (entry,) = file_entries("prompts/comet.json", data)
    assert entry.error is None and entry.job is not None
    assert (entry.job.prompt, entry.job.duration) == ("a comet", 10)


def test_json_list_entries_judged_one_by_one_naming_item() -> None:
    # Given a .json list mixing valid and invalid jobs
    items: list[Any] = [
        {"prompt": "first"},
        {"prompt": "second", "duration": 7},
        "not an object",
        {"prompt": "fourth", "promt": "typo"},
    ]

    # When parsing it
    entries = file_entries("prompts/batch.json", json.dumps(items).encode())

    # Then each item has its own outcome, labelled with its 1-based position
    assert [entry.label for entry in entries] == [
        f"prompts/batch.json item {n}" for n in range(1, 5)
    ]
    assert [entry.position for entry in entries] == [1, 2, 3, 4]
    assert entries[0].job is not None and entries[0].job.prompt == "first"
    assert entries[0].error is None
    errors = [entry.error for entry in entries[1:]]
    assert [(e.field if e else None) for e in errors] == ["duration", "body", "promt"]
    assert all(entry.job is None for entry in entries[1:])


def test_jsonl_lines_judged_one_by_one_when_blank_lines_present() -> None:
    # Given a .jsonl file with blank lines, CRLF endings, a bad line and an invalid job
    text = (
        '{"prompt": "one"}\r\n'
        "\n"
        "   \n"
        '{"prompt": "four", "aspect_ratio": "1:1"}\r\n'
        "{not json\n"
        '{"prompt": "six", "guidance_scale": 2}\n'
        "\n"
    )

    # When parsing it
    entries = file_entries("in/jobs.jsonl", text.encode())

    # Then blank lines are skipped and every entry is labelled with its real line number
    assert [entry.label for entry in entries] == [
        "in/jobs.jsonl line 1",
        "in/jobs.jsonl line 4",
        "in/jobs.jsonl line 5",
        "in/jobs.jsonl line 6",
    ]
    assert [entry.position for entry in entries] == [1, 4, 5, 6]
    assert entries[0].job is not None and entries[0].job.prompt == "one"
    assert entries[1].job is not None and entries[1].job.aspect_ratio == "1:1"
    bad_json, bad_guidance = entries[2].error, entries[3].error
    assert bad_json is not None and bad_json.field == "line" and "not valid JSON" in bad_json.rule
    assert bad_guidance is not None and bad_guidance.field == "guidance_scale"


def test_jsonl_line_kept_whole_when_prompt_holds_unicode_line_separator() -> None:
    # Given a .jsonl line whose prompt holds U+2028 raw (valid inside a JSON string)
    text = '{"prompt": "verse one\u2028verse two"}\n{"prompt": "next"}\n'

    # When parsing it
    entries = file_entries("in/poem.jsonl", text.encode())

    # Then only newlines split jobs: two valid jobs on lines 1 and 2
    assert [entry.error for entry in entries] == [None, None]
    assert [entry.label for entry in entries] == ["in/poem.jsonl line 1", "in/poem.jsonl line 2"]
    assert entries[0].job is not None
    assert entries[0].job.prompt == "verse one\u2028verse two"


@pytest.mark.parametrize(
    ("key", "data", "words"),
    [
        ("prompts/bad.txt", b"caf\xe9 au lait", "not UTF-8 (byte 3)"),
        ("prompts/bad.jsonl", b'{"prompt": "\xff"}', "not UTF-8"),
        ("prompts/movie.mp4", b"\x00\x00\x00\x18ftyp", "unsupported file type"),
        ("prompts/notes.md", b"a prompt", "unsupported file type"),
        ("prompts/noext", b"a prompt", "unsupported file type"),
        ("prompts/big.txt", b"x" * (MAX_BYTES + 1), f"the limit is {MAX_BYTES}"),
        ("prompts/broken.json", b'{"prompt": ', "not valid JSON"),
        ("prompts/empty.json", b"", "not valid JSON"),
        ("prompts/empty-list.json", b"[]", "holds no job"),
        ("prompts/empty.jsonl", b"", "holds no job"),
        ("prompts/blank.jsonl", b"\n  \n\r\n", "holds no job"),
        (
            "prompts/many.jsonl",
            b"\n".join(b'{"prompt": "p%d"}' % n for n in range(MAX_JOBS + 1)),
            f"holds {MAX_JOBS + 1} jobs, the limit is {MAX_JOBS}",
        ),
        (
            "prompts/many.json",
            json.dumps([{"prompt": f"p{n}"} for n in range(MAX_JOBS + 1)]).encode(),
            f"the limit is {MAX_JOBS}",
        ),
    ],
)
def test_whole_file_rejected_naming_file_when_unusable(key: str, data: bytes, words: str) -> None:
    # Given a prompt file that cannot be used at all
    # When parsing it
    with pytest.raises(PromptFileRejected) as caught:
        file_entries(key, data)

    # Then one permanent rejection names the file and the reason
    assert isinstance(caught.value, PermanentError)
    assert caught.value.code == "prompt_file_rejected"
    assert caught.value.message.startswith(f"{key}: ")
    assert words in caught.value.message


def test_file_accepted_when_exactly_at_limits() -> None:
    # Given a .jsonl file holding exactly the allowed number of jobs, exactly max_bytes long
    lines = b"\n".join(b'{"prompt": "p%d"}' % n for n in range(MAX_JOBS))
    data = lines + b" " * (MAX_BYTES - len(lines))

    # When parsing it / Then every job is there
    entries = parse_prompt_file("in/edge.jsonl", data, max_bytes=MAX_BYTES, max_jobs=MAX_JOBS)
    assert [entry.job.prompt for entry in entries if entry.job] == [
        f"p{n}" for n in range(MAX_JOBS)
    ]


def test_empty_txt_file_is_one_rejected_job_when_uploaded() -> None:
    # Given / When an empty .txt file
    (entry,) = file_entries("prompts/empty.txt", b"")

    # Then its single job is refused for an empty prompt
    assert entry.job is None
    assert entry.error is not None and entry.error.field == "prompt"


# ------------------------------------------------------------------------------ job ids


def message_job_id(body: str, message_id: str) -> str:
    """The job id intake gives a valid message received under `message_id`."""
    intake = take_in(ReceivedMessage(message_id=message_id, body=body))
    assert isinstance(intake, Admit), intake
    return intake.job.job_id


def test_message_job_id_follows_the_body_not_the_message_id_when_none_is_named() -> None:
    # Given one body delivered under two message ids (a redrive, a re-send), and another body
    body = "a fox"

    # When deriving its id each time
    first = message_job_id(body, "0f1e2d3c-aaaa-bbbb-cccc-000000000001")
    again = message_job_id(body, "0f1e2d3c-aaaa-bbbb-cccc-000000000002")
    other = message_job_id("a fox ", "0f1e2d3c-aaaa-bbbb-cccc-000000000001")

    # Then the identical body is one job whatever its message id, another body another job
    assert first == again
    assert first != other
    for job_id in (first, other):
        assert parse_message_body(job_body(job_id=job_id)).job_id == job_id


def test_message_job_id_is_the_given_one_when_body_names_it() -> None:
    # Given a job carrying its own id
    body = job_body(job_id="order-7")

    # When delivered under two message ids / Then the caller's id wins both times
    assert message_job_id(body, "m-1") == message_job_id(body, "m-2") == "order-7"


def test_file_job_id_stable_when_same_upload_reported_twice() -> None:
    # Given the same upload (bucket, key, sequencer) reported twice by S3
    first = file_job_id("prompts", "in/a.jsonl", "0062E9B4F1C7A1D2E3", 3)
    again = file_job_id("prompts", "in/a.jsonl", "0062E9B4F1C7A1D2E3", 3)

    # When / Then the ids match, and any difference (re-upload, other file/bucket/line) changes it
    assert first == again
    variants = {
        file_job_id("prompts", "in/a.jsonl", "0062E9B4F1C7A1D2FF", 3),
        file_job_id("prompts", "in/b.jsonl", "0062E9B4F1C7A1D2E3", 3),
        file_job_id("other", "in/a.jsonl", "0062E9B4F1C7A1D2E3", 3),
        file_job_id("prompts", "in/a.jsonl", "0062E9B4F1C7A1D2E3", 4),
    }
    assert first not in variants and len(variants) == 4
    for job_id in (first, *variants):
        assert parse_message_body(job_body(job_id=job_id)).job_id == job_id


def test_to_message_round_trips_when_job_fanned_out() -> None:
    # Given a validated job with an id (as a prompt file fans it out to the queue)
    job = parse_message_body(
        job_body(negative_prompt="fog", guidance_scale=0.3, metadata={"k": 1})
    ).identified("file-abc-1")

    # When serialising it and parsing it back
    again = parse_message_body(json.dumps(job.to_message()))

    # Then nothing is lost, and the id travels with it
    assert again == replace(job.request, job_id="file-abc-1")
    assert again.identified("another-id").job_id == job.job_id
