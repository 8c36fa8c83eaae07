"""The local runner's promises held from its command line: webhooks against a WaveSpeed stand-in
without the secret endpoint, same-name uploads, and repeated `--parameter-overrides`."""

from __future__ import annotations

import http.server
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from kling_local.runner import main
from kling_local.simulator import WaveSpeedSimulator
from tests.conftest import ServerStarter, SimFactory

SIM_DEFAULTS = {"generation_seconds": 0.3, "processing_after_seconds": 0.05}
SECRET_PATH = "/api/v3/webhook/secret"
FAST = ["--generation-seconds", "0.3"]


def notifications(out: Path) -> list[dict[str, Any]]:
    lines = (out / "notifications.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


class StandIn(http.server.BaseHTTPRequestHandler):
    """A WaveSpeed stand-in: relays every request to a simulator, except that it may lack
    `GET /api/v3/webhook/secret` (404), as an API or test server without webhooks does."""

    upstream: ClassVar[str] = ""
    has_secret_endpoint: ClassVar[bool] = True
    seen: ClassVar[list[str]] = []

    def relay(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        if self.path.startswith(SECRET_PATH) and not self.has_secret_endpoint:
            self.answer(404, b'{"code": 404, "message": "Not Found", "data": null}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        request = urllib.request.Request(
            self.upstream + self.path,
            data=self.rfile.read(length) if length else None,
            method=self.command,
            headers={"Authorization": self.headers.get("Authorization", "")},
        )
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                self.answer(reply.status, reply.read())
        except urllib.error.HTTPError as exc:
            self.answer(exc.code, exc.read())

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = relay

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: the test reads `seen`."""


def stand_in(
    sim: WaveSpeedSimulator, start: ServerStarter, has_secret_endpoint: bool
) -> tuple[str, type[StandIn]]:
    handler = type(
        "Relay",
        (StandIn,),
        {"upstream": sim.base_url, "has_secret_endpoint": has_secret_endpoint, "seen": []},
    )
    address = start(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler))
    return f"http://{address}", handler


def submit_queries(seen: list[str]) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(line.split(" ", 1)[1]).query) for line in seen if "POST" in line]


@pytest.mark.parametrize("has_secret_endpoint", [False, True])
def test_jobs_complete_polled_and_the_run_says_so_when_the_api_lacks_the_secret_endpoint(
    has_secret_endpoint: bool,
    make_sim: SimFactory,
    http_servers: ServerStarter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a WaveSpeed stand-in with or without GET /api/v3/webhook/secret, webhooks on (default)
    sim = make_sim()
    base, handler = stand_in(sim, http_servers, has_secret_endpoint)
    monkeypatch.setenv("WAVESPEED_API_KEY", sim.config.api_key)
    out = tmp_path / "out"

    # When the runner runs two prompts against it, quietly
    code = main(
        ["--api-base", base, "--allow-output-host", sim.host_port, "--out", str(out), "--quiet"]
        + ["--prompt", "a kite over dunes", "--prompt", "a lantern on a lake"]
    )

    # Then both jobs complete, each paid once, whether or not the secret could be read
    err = capsys.readouterr().err
    assert code == 0
    assert sorted(n["status"] for n in notifications(out)) == ["completed", "completed"]
    assert sim.stats()["submit_requests"] == 2
    # ... the secret was asked for once, however many jobs
    assert handler.seen.count(f"GET {SECRET_PATH}") == 1
    submits = submit_queries(handler.seen)
    if has_secret_endpoint:
        # ... with it, every submit carries the local endpoint's URL, and nothing is said
        assert all("webhook" in query for query in submits)
        assert "webhooks off" not in err
    else:
        # ... without it, no submit asks for a webhook, the run says why once and counts them
        assert all("webhook" not in query for query in submits)
        assert [t["webhook_url"] for t in sim.tasks()] == [None, None]
        assert err.count("webhooks off for this run: ") == 1
        assert "HTTP 404" in err
        assert "2 job(s) polled without a webhook" in err


def test_same_named_files_are_two_versions_each_running_its_lines_once_when_uploaded(
    tmp_path: Path,
) -> None:
    # Given two different prompt files with one name, in two folders
    first, second = tmp_path / "a" / "batch.jsonl", tmp_path / "b" / "batch.jsonl"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_text('{"prompt": "a glass city", "job_id": "glass"}\n')
    second.write_text('{"prompt": "a paper city"}\n{"prompt": "a stone city"}\n')
    out = tmp_path / "out"

    # When the runner uploads both in one run
    code = main(["--upload", str(first), "--upload", str(second), "--out", str(out), "--quiet"])

    # Then all three lines ran once, under one key and two versions, one per file
    assert code == 0
    notes = notifications(out)
    assert sorted(n["input"]["prompt"] for n in notes) == [
        "a glass city",
        "a paper city",
        "a stone city",
    ]
    assert all(n["status"] == "completed" for n in notes)
    assert {n["source"]["key"] for n in notes} == {"prompts/batch.jsonl"}
    versions = {n["input"]["prompt"]: n["source"]["version_id"] for n in notes}
    assert versions["a paper city"] == versions["a stone city"] != versions["a glass city"]


def test_repeated_override_flags_add_up_and_a_refusal_in_any_stops_the_run(
    make_sim: SimFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a WaveSpeed stand-in that counts submits
    sim = make_sim()
    monkeypatch.setenv("WAVESPEED_API_KEY", sim.config.api_key)
    base = ["--api-base", sim.base_url, "--allow-output-host", sim.host_port, "--quiet"]
    out = tmp_path / "out"

    # When --parameter-overrides is given twice, both values good: a $1.30 budget, two jobs
    code = main(
        [*base, "--prompt", "a sunrise", "--prompt", "a sunset", "--out", str(out)]
        + ["--parameter-overrides", "EnableWebhooks=false"]
        + ["--parameter-overrides", "DailyBudgetUsd=1.3", "PollDeadlineSeconds=600"]
    )
    # ... and again with the refused value in the second flag only
    refused = main(
        [*base, "--prompt", "a noon"]
        + ["--parameter-overrides", "DailyBudgetUsd=1.3"]
        + ["--parameter-overrides", "MaxReceiveCount=1"]
    )

    # Then both flags applied (one job within the budget, one parked for it), and the refused
    # run stopped before any submit, naming the parameter
    assert code == 0
    outcomes = sorted((n["status"], (n["error"] or {}).get("code")) for n in notifications(out))
    assert outcomes == [("completed", None), ("failed", "budget_exceeded")]
    assert sim.tasks()[0]["webhook_url"] is None
    assert refused == 2
    assert "MaxReceiveCount" in capsys.readouterr().err
    assert sim.stats()["submit_requests"] == 1
