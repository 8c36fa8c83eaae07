"""The local pipeline served over HTTP (`runner --serve`): the CLI finds it by stack name."""

from __future__ import annotations

import pytest

from kling_cli.app import main as cli
from kling_local.pipeline import LocalPipeline


def test_cli_submit_waits_for_the_video_when_pipeline_is_served(
    served: LocalPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the local pipeline served on an HTTP endpoint, published as stack kling-local
    assert served.endpoint_url is not None

    # When a user submits through the CLI, naming only the stack and the endpoint
    code = cli(
        [
            "--stack",
            "kling-local",
            "--endpoint-url",
            served.endpoint_url,
            "submit",
            "a lantern floating over a lake",
            "--wait",
            "--timeout",
            "60",
        ]
    )

    # Then the job completes and the CLI prints where the video is and a link to it
    out = capsys.readouterr().out
    assert code == 0, out
    assert "s3://kling-local-videosbucket/videos/" in out
    assert served.endpoint_url in out  # the presigned link points at the served endpoint
    [stored] = [o for o in served.objects() if o["Key"].endswith(".mp4")]
    assert stored["Size"] > 0
