"""The local runner's command line (CONTRACT §2), run as a user would run it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kling_local.runner import main
from tests.conftest import SimFactory

FAST = ["--generation-seconds", "0.3"]
SIM_DEFAULTS = {"generation_seconds": 0.3, "processing_after_seconds": 0.05}


def notifications(out: Path) -> list[dict[str, Any]]:
    lines = (out / "notifications.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_prompts_end_in_notifications_and_files_when_run_with_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two prompts, one of which the API will fail
    out = tmp_path / "out"

    # When the runner runs them with --out
    code = main(
        ["--prompt", "a red fox", "--prompt", "a lighthouse [sim:fail]", "--out", str(out), *FAST]
    )

    # Then it exits 0, prints one summary per job, writes both notifications and the one video
    captured = capsys.readouterr()
    assert code == 0
    summaries = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(s["status"] for s in summaries) == ["completed", "failed"]
    notes = {n["input"]["prompt"]: n for n in notifications(out)}
    done = notes["a red fox"]
    assert done["status"] == "completed"
    [output] = done["outputs"]
    video = out / output["key"]
    assert hashlib.sha256(video.read_bytes()).hexdigest() == output["sha256"]
    assert notes["a lighthouse [sim:fail]"]["status"] == "failed"
    # and progress lines went to stderr
    assert "completed ->" in captured.err


def test_raw_messages_are_sent_as_is_when_given_a_messages_file(tmp_path: Path) -> None:
    # Given a file of raw bodies: a JSON job, a plain prompt, a blank line and broken JSON
    messages = tmp_path / "messages.txt"
    messages.write_text(
        '{"prompt": "a koi pond", "job_id": "koi-1"}\n'
        "a bowl of ramen, steam rising\n"
        "\n"
        '{"prompt": "broken"\n'
    )
    out = tmp_path / "out"

    # When the runner sends them
    code = main(["--messages", str(messages), "--out", str(out), "--quiet", *FAST])

    # Then each non-blank line is one job with its outcome
    assert code == 0
    statuses = sorted(str(n["status"]) for n in notifications(out))
    assert statuses == ["completed", "completed", "rejected"]
    assert any(n["job_id"] == "koi-1" for n in notifications(out))


def test_uploaded_prompt_file_runs_each_line_when_given_upload(tmp_path: Path) -> None:
    # Given a .jsonl prompt file with two jobs
    prompts = tmp_path / "batch.jsonl"
    prompts.write_text('{"prompt": "a glass city"}\n{"prompt": "a paper city", "duration": 10}\n')
    out = tmp_path / "out"

    # When the runner uploads it through the S3 trigger
    code = main(["--upload", str(prompts), "--out", str(out), "--quiet", *FAST])

    # Then both lines complete, each naming the file and its line
    assert code == 0
    notes = notifications(out)
    assert [n["status"] for n in notes] == ["completed", "completed"]
    assert sorted(n["source"]["line"] for n in notes) == [1, 2]
    assert all(n["source"]["key"] == "prompts/batch.jsonl" for n in notes)


def test_other_api_is_used_and_its_outputs_need_allowing_when_api_base_given(
    tmp_path: Path, make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a separate WaveSpeed-compatible server and its key in WAVESPEED_API_KEY
    server = make_sim()
    monkeypatch.setenv("WAVESPEED_API_KEY", server.config.api_key)
    base = ["--api-base", server.base_url, "--prompt", "a kite", "--quiet"]

    # When the runner uses it without allowing its output host, then with it allowed
    refused_out, allowed_out = tmp_path / "refused", tmp_path / "allowed"
    refused = main([*base, "--out", str(refused_out)])
    allowed = main([*base, "--allow-output-host", server.host_port, "--out", str(allowed_out)])

    # Then the API is used both times (2 tasks), but the video is only fetched when allowed
    assert (refused, allowed) == (0, 0)
    assert server.stats()["tasks_created"] == 2
    [refusal] = notifications(refused_out)
    assert refusal["status"] == "failed"
    assert refusal["error"]["code"] == "output_url_refused"
    [success] = notifications(allowed_out)
    assert success["status"] == "completed"


def test_exits_2_with_a_message_when_input_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the runner gets nothing to run, or a file that does not exist
    nothing = main([])
    missing = main(["--upload", str(tmp_path / "nope.jsonl")])

    # Then it refuses, saying why
    assert (nothing, missing) == (2, 2)
    err = capsys.readouterr().err
    assert "nothing to run" in err
    assert "no such file" in err
