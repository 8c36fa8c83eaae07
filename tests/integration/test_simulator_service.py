"""Integration tests: the simulator behaves like the real WaveSpeed service (tiers, error codes,
outages, CDN-shaped outputs, history, balance and refunds, key activation, webhook secret)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import wavespeed

from kling_local.simulator import MODEL, SimulatorConfig, WaveSpeedSimulator
from kling_local.simulator.__main__ import config_from_args, main, parse_args
from kling_local.simulator.config import FAILURE_CODES, TIERS, Outage, Tier
from tests.conftest import SimFactory
from tests.integration.test_simulator import (
    KEY,
    OPTIMIZER_PATH,
    call_json,
    download,
    result,
    submit,
    wait_terminal,
)

#: Simulator settings of this module's `make_sim` / `sim` fixtures (tests/conftest.py).
SIM_DEFAULTS: dict[str, Any] = {"generation_seconds": 0.2, "processing_after_seconds": 0.05}


def statuses(sim: WaveSpeedSimulator, ids: list[str]) -> list[str]:
    return [result(sim, task_id)[1]["data"]["status"] for task_id in ids]


# ------------------------------------------------------------------------------ tiers


@pytest.mark.parametrize(
    ("tier", "concurrency", "per_minute"),
    [("bronze", 2, 2), ("silver", 300, 500), ("gold", 3000, 3000), ("ultra", 10000, 5000)],
)
def test_tier_preset_sets_documented_limits_when_chosen(
    tier: str, concurrency: int, per_minute: int
) -> None:
    # Given / When a tier preset / Then its caps are the documented ones
    assert SimulatorConfig(tier=tier).limits() == Tier(concurrency, per_minute)
    assert TIERS[tier] == Tier(concurrency, per_minute)


def test_custom_limits_override_tier_when_given() -> None:
    # Given a preset with one explicit number, and explicit numbers alone
    mixed = SimulatorConfig(tier="bronze", videos_per_minute=50).limits()
    custom = SimulatorConfig(max_concurrency=7).limits()

    # Then explicit numbers win, and no setting at all means unlimited
    assert mixed == Tier(max_concurrency=2, videos_per_minute=50)
    assert custom is not None and custom.max_concurrency == 7
    assert SimulatorConfig().limits() is None


def test_submit_gets_429_envelope_when_tier_minute_full(make_sim: SimFactory) -> None:
    # Given Bronze (2 videos per minute) with a "minute" scaled to 1.2 s
    sim = make_sim(tier="bronze", time_scale=0.02, generation_seconds=0.0)

    # When submitting three at once, then once more after the window
    answers = [submit(sim, f"clip {i}") for i in range(3)]
    time.sleep(1.3)
    later_status, _ = submit(sim, "clip after a minute")

    # Then the third is refused in the error envelope and creates nothing; the later one runs
    assert [status for status, _ in answers] == [200, 200, 429]
    assert answers[2][1]["code"] == 429 and answers[2][1]["data"] is None
    assert later_status == 200
    assert sim.stats()["tasks_created"] == 3


def test_task_over_concurrency_waits_created_when_slots_busy(make_sim: SimFactory) -> None:
    # Given Bronze's two slots (with room in the per-minute cap) and slow generations
    sim = make_sim(tier="bronze", videos_per_minute=10, generation_seconds=0.8)
    ids = [submit(sim, f"queued {i}")[1]["data"]["id"] for i in range(3)]

    # When looking while the first two run
    time.sleep(0.3)
    early = statuses(sim, ids)
    finished = [wait_terminal(sim, task_id)["status"] for task_id in ids]

    # Then the third waited in "created" (queued, paid) and still completed
    assert early == ["processing", "processing", "created"]
    assert finished == ["completed"] * 3


def test_sdk_run_completes_when_tier_preset_set(make_sim: SimFactory) -> None:
    # Given the official SDK against a Bronze-preset simulator
    sim = make_sim(tier="bronze")
    client = wavespeed.Client(api_key=KEY, base_url=sim.base_url)

    # When running the model / Then it completes with one output
    output = client.run(MODEL, {"prompt": "a kite over dunes"}, poll_interval=0.1)
    assert len(output["outputs"]) == 1


# ------------------------------------------------------------------------------ error codes


@pytest.mark.parametrize(
    ("marker", "status", "code"),
    [
        ("[sim:moderation]", "failed", 1200),
        ("[sim:fail-1200]", "failed", 1200),
        ("[sim:fail-1401]", "failed", 1401),
        ("[sim:fail-1402]", "failed", 1402),
        ("[sim:fail-5003]", "failed", 5003),
        ("[sim:timeout]", "timeout", 5004),
    ],
)
def test_failed_prediction_carries_code_when_marker_given(
    sim: WaveSpeedSimulator, marker: str, status: str, code: int
) -> None:
    # Given a prompt asking for a documented failure
    _, envelope = submit(sim, f"scene {marker}")

    # When it ends
    data = wait_terminal(sim, envelope["data"]["id"])

    # Then the prediction carries the code (and, for coded markers, the documented text)
    assert (data["status"], data["code"]) == (status, code)
    if "fail-" in marker or "moderation" in marker:
        assert data["error"] == FAILURE_CODES[code]
    assert data["outputs"] == []


def test_prediction_code_is_zero_when_completed(sim: WaveSpeedSimulator) -> None:
    # Given / When a normal task finishes / Then its code says success
    _, envelope = submit(sim, "a quiet lake")
    data = wait_terminal(sim, envelope["data"]["id"])
    assert (data["status"], data["code"], data["error"]) == ("completed", 0, "")


def test_random_failures_carry_configured_codes_when_rates_set(make_sim: SimFactory) -> None:
    # Given every task failing at random, half by moderation
    sim = make_sim(seed=3, fail_rate=0.5, moderation_rate=0.5, fail_codes=(1403, 5000))

    # When running a dozen tasks
    ids = [submit(sim, f"p{i}")[1]["data"]["id"] for i in range(12)]
    codes = {wait_terminal(sim, task_id)["code"] for task_id in ids}

    # Then every one failed with one of the chosen codes or moderation's
    assert codes <= {1403, 5000, 1200} and 1200 in codes and len(codes) >= 2


# ------------------------------------------------------------------------------ outages


def test_result_outage_answers_503_then_recovers(sim: WaveSpeedSimulator) -> None:
    # Given a task, then a result-side outage of 0.4 s
    _, envelope = submit(sim, "during the storm")
    task_id = envelope["data"]["id"]
    sim.start_outage(0.4, on="result")

    # When polling during and after it, and submitting during it
    during_status, during = result(sim, task_id)
    submit_status, _ = submit(sim, "submits still work")
    time.sleep(0.45)
    after = wait_terminal(sim, task_id)

    # Then reads fail with 503 while it lasts, submits pass, and the task is intact afterwards
    assert during_status == 503 and during["code"] == 503 and during["data"] is None
    assert submit_status == 200
    assert after["status"] == "completed"


def test_submit_outage_answers_code_5003_when_code_form(sim: WaveSpeedSimulator) -> None:
    # Given a submit-side outage answered in the envelope
    sim.start_outage(5.0, on="submit", form="code")

    # When submitting / Then HTTP 200 carries code 5003 and nothing is created or charged
    status, envelope = submit(sim, "nobody home")
    assert status == 200 and envelope["code"] == 5003 and envelope["data"] is None
    assert sim.stats()["tasks_created"] == 0


def test_configured_outage_scales_with_time_scale(make_sim: SimFactory) -> None:
    # Given an outage from 0 s for 10 "service seconds" at time scale 0.05 (0.5 s real)
    sim = make_sim(time_scale=0.05, outages=(Outage(0.0, 10.0, on="both"),))

    # When submitting now and after it
    first, _ = submit(sim, "too early")
    time.sleep(0.55)
    second, _ = submit(sim, "in time")

    # Then only the first met the outage
    assert (first, second) == (503, 200)


# ------------------------------------------------------------------------------ output URLs


def test_output_urls_use_configured_cdn_host(make_sim: SimFactory) -> None:
    # Given outputs served under a CloudFront host name
    sim = make_sim(output_host="d1q70pf5vjeyhc.cloudfront.net")

    # When a two-output task completes
    _, envelope = submit(sim, "twins [sim:two-outputs]")
    data = wait_terminal(sim, envelope["data"]["id"])

    # Then its URLs are shaped like WaveSpeed's, numbered from 1, on that host
    base = f"https://d1q70pf5vjeyhc.cloudfront.net/predictions/{data['id']}"
    assert data["outputs"] == [f"{base}/1.mp4", f"{base}/2.mp4"]


def test_output_style_serves_flat_output_paths_when_chosen(make_sim: SimFactory) -> None:
    # Given the flat /output/<id>.mp4 style on the simulator's own address
    sim = make_sim(output_style="output")
    _, envelope = submit(sim, "flat [sim:two-outputs]")
    data = wait_terminal(sim, envelope["data"]["id"])

    # When downloading both outputs
    bodies = [download(url) for url in data["outputs"]]

    # Then the URLs are flat and each serves its own video
    assert data["outputs"] == [
        f"{sim.base_url}/output/{data['id']}.mp4",
        f"{sim.base_url}/output/{data['id']}-2.mp4",
    ]
    assert [status for status, _, _ in bodies] == [200, 200]
    assert sim.output_sha256(data["id"], 1) != sim.output_sha256(data["id"], 0)


def test_execution_time_reported_in_ms_when_terminal(make_sim: SimFactory) -> None:
    # Given / When a 0.3 s generation finishes / Then executionTime and timings say 300 ms
    sim = make_sim(generation_seconds=0.3)
    data = wait_terminal(sim, submit(sim, "timed")[1]["data"]["id"])
    assert data["executionTime"] == 300 and data["timings"] == {"inference": 300}


# ------------------------------------------------------------------------------ history


def history(sim: WaveSpeedSimulator, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return call_json(sim, "POST", "/api/v3/predictions", body)


def test_history_lists_newest_first_with_total_when_paged(sim: WaveSpeedSimulator) -> None:
    # Given three video tasks and one prompt optimisation
    ids = []
    for i in range(3):
        ids.append(submit(sim, f"history {i}")[1]["data"]["id"])
        time.sleep(0.005)
    call_json(sim, "POST", OPTIMIZER_PATH, {"text": "t", "mode": "video", "enable_sync_mode": True})

    # When reading pages of two, and only Kling's predictions
    _, first = history(sim, {"page": 1, "page_size": 2})
    _, second = history(sim, {"page": 2, "page_size": 2})
    _, kling = history(sim, {"page": 1, "page_size": 100, "model": MODEL})

    # Then every prediction is listed once, newest first, and the filter keeps the videos
    assert first["code"] == 200 and first["data"]["total"] == 4
    listed = [item["id"] for item in first["data"]["items"] + second["data"]["items"]]
    assert len(listed) == 4 and listed[1:] == ids[::-1]
    assert [item["id"] for item in kling["data"]["items"]] == ids[::-1]


def test_history_filters_by_time_window_and_status(make_sim: SimFactory) -> None:
    # Given a failed task, then (later) a completed one
    sim = make_sim(generation_seconds=0.0, processing_after_seconds=0.0)
    failed = submit(sim, "early [sim:fail]")[1]["data"]
    time.sleep(0.01)
    done = submit(sim, "late")[1]["data"]

    # When filtering by creation time (bounds inclusive) and by status
    _, after = history(sim, {"page": 1, "page_size": 10, "created_after": done["created_at"]})
    _, before = history(sim, {"page": 1, "page_size": 10, "created_before": failed["created_at"]})
    _, only_failed = history(sim, {"page": 1, "page_size": 10, "status": "failed"})

    # Then each answer holds exactly the matching task
    assert [item["id"] for item in after["data"]["items"]] == [done["id"]]
    assert [item["id"] for item in before["data"]["items"]] == [failed["id"]]
    assert [item["id"] for item in only_failed["data"]["items"]] == [failed["id"]]


def test_history_get_form_takes_query_parameters(sim: WaveSpeedSimulator) -> None:
    # Given a task / When listing with GET, with and without parameters
    task_id = submit(sim, "get form")[1]["data"]["id"]
    plain_status, plain = call_json(sim, "GET", "/api/v3/predictions")
    paged_status, paged = call_json(
        sim, "GET", f"/api/v3/predictions?page=1&page_size=1&model={MODEL}"
    )

    # Then both answer with the task
    assert (plain_status, paged_status) == (200, 200)
    assert plain["data"]["items"][0]["id"] == paged["data"]["items"][0]["id"] == task_id


@pytest.mark.parametrize(
    "body",
    [
        {"page_size": 10},
        {"page": 1},
        {"page": 0, "page_size": 10},
        {"page": 1, "page_size": 101},
        {"page": 1, "page_size": 10, "created_after": "yesterday"},
        {"page": 1, "page_size": 10, "status": "done"},
    ],
)
def test_history_returns_400_when_query_invalid(
    sim: WaveSpeedSimulator, body: dict[str, Any]
) -> None:
    # Given / When an invalid history query / Then a 400 envelope
    status, envelope = history(sim, body)
    assert status == 400 and envelope["code"] == 400 and envelope["data"] is None


def test_history_requires_key(sim: WaveSpeedSimulator) -> None:
    # Given / When listing without a key / Then 401
    status, envelope = call_json(sim, "POST", "/api/v3/predictions", {"page": 1}, key=None)
    assert status == 401 and envelope["code"] == 401


# ------------------------------------------------------------------------------ money


@pytest.mark.parametrize("path", ["/api/v3/balance", "/api/v3/account/balance"])
def test_balance_drawn_down_by_submits_when_read(make_sim: SimFactory, path: str) -> None:
    # Given $10 of credit
    sim = make_sim(balance_usd=10.0)

    # When a 5 s and a 10 s video are submitted, and the balance read on either documented path
    before = call_json(sim, "GET", path)[1]["data"]
    submit(sim, "short")
    submit(sim, "long", duration=10)
    after = call_json(sim, "GET", path)[1]["data"]

    # Then the balance fell by $1.30 + $2.60
    assert before == {"balance": 10.0, "currency": "USD"}
    assert after["balance"] == pytest.approx(6.10)
    assert sim.balance_usd() == pytest.approx(6.10)


def test_submit_refused_with_insufficient_credits_when_balance_short(make_sim: SimFactory) -> None:
    # Given $2 of credit
    sim = make_sim(balance_usd=2.0)

    # When a 10 s video ($2.60) is submitted
    status, envelope = submit(sim, "too expensive", duration=10)

    # Then it is refused with the insufficient-credits error, and nothing is created or charged
    assert status == 402 and envelope["code"] == 402 and envelope["data"] is None
    assert "Insufficient credits" in envelope["message"]
    assert sim.stats()["tasks_created"] == 0
    assert sim.balance_usd() == 2.0


def test_failed_generation_refunded_when_it_ends(make_sim: SimFactory) -> None:
    # Given $5 of credit, one failing and one completing task
    sim = make_sim(balance_usd=5.0, generation_seconds=0.3)
    failing = submit(sim, "doomed [sim:moderation]")[1]["data"]["id"]
    fine = submit(sim, "fine")[1]["data"]["id"]
    charged = sim.balance_usd()

    # When both have ended
    wait_terminal(sim, failing)
    wait_terminal(sim, fine)

    # Then both were charged at submit, and only the failed one was given back
    assert charged == pytest.approx(5.0 - 2 * 1.30)
    assert sim.balance_usd() == pytest.approx(5.0 - 1.30)


def test_optimizer_charged_a_tenth_of_a_cent(make_sim: SimFactory) -> None:
    # Given / When one optimisation / Then $0.001 is taken
    sim = make_sim(balance_usd=1.0)
    call_json(sim, "POST", OPTIMIZER_PATH, {"text": "x", "mode": "video", "enable_sync_mode": True})
    assert sim.balance_usd() == pytest.approx(0.999)


# ------------------------------------------------------------------------------ keys & webhooks


def test_unactivated_key_gets_401_with_its_own_message(make_sim: SimFactory) -> None:
    # Given a key never activated by a top-up
    sim = make_sim(activated=False)

    # When submitting and reading the balance
    submit_status, submitted = submit(sim, "x")
    balance_status, balance = call_json(sim, "GET", "/api/v3/balance")

    # Then both are 401 naming activation (a wrong key stays a plain "Unauthorized")
    assert (submit_status, balance_status) == (401, 401)
    assert "not activated" in submitted["message"] and "not activated" in balance["message"]
    assert sim.stats()["tasks_created"] == 0


def test_webhook_secret_returned_with_whsec_prefix(make_sim: SimFactory) -> None:
    # Given a configured secret / When reading it / Then it comes in the success envelope
    sim = make_sim(webhook_secret="whsec_abc123")
    status, envelope = call_json(sim, "GET", "/api/v3/webhook/secret")
    assert status == 200 and envelope["data"] == {"secret": "whsec_abc123"}
    assert call_json(sim, "GET", "/api/v3/webhook/secret", key="wrong")[0] == 401


@pytest.mark.parametrize(
    "settings",
    [
        {"tier": "platinum"},
        {"time_scale": 0.0},
        {"output_style": "cdn"},
        {"fail_codes": (1234,)},
        {"webhook_secret": "secret"},
        {"outages": (Outage(0.0, 1.0, on="poll"),)},
        {"fail_rate": 0.5, "moderation_rate": 0.6},
    ],
)
def test_config_rejects_setting_when_invalid(settings: dict[str, Any]) -> None:
    # Given / When an invalid setting / Then the simulator refuses to start
    with pytest.raises(ValueError):
        WaveSpeedSimulator(SimulatorConfig(**settings))


# ------------------------------------------------------------------------------ command line


def test_cli_flags_build_the_matching_config() -> None:
    # Given every real-service flag
    args = parse_args(
        [
            "--tier", "silver", "--videos-per-minute", "40", "--time-scale", "0.05",
            "--outage", "30:1800:result:code", "--outage", "0:5", "--balance", "12.5",
            "--not-activated", "--output-host", "d2p7pge43lyniu.cloudfront.net",
            "--output-style", "output", "--webhook-secret", "whsec_x", "--moderation-rate", "0.1",
        ]
    )  # fmt: skip

    # When turned into a config
    config = config_from_args(args)

    # Then each flag landed in its setting
    assert config.limits() == Tier(max_concurrency=300, videos_per_minute=40)
    assert config.time_scale == 0.05
    assert config.outages == (Outage(30.0, 1800.0, "result", "code"), Outage(0.0, 5.0))
    assert (config.balance_usd, config.activated) == (12.5, False)
    assert (config.output_host, config.output_style) == ("d2p7pge43lyniu.cloudfront.net", "output")
    assert (config.webhook_secret, config.moderation_rate) == ("whsec_x", 0.1)


@pytest.mark.parametrize(
    "argv", [["--outage", "soon"], ["--outage", "0:5:poll"], ["--tier", "tin"]]
)
def test_cli_rejects_flag_when_malformed(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given / When a malformed flag / Then argparse refuses it with a usage error
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_exits_with_message_when_settings_conflict() -> None:
    # Given a webhook secret without the whsec_ prefix / When starting / Then a clean exit
    with pytest.raises(SystemExit, match="webhook_secret must start with whsec_"):
        main(["--port", "0", "--webhook-secret", "plain"])
