"""Unit tests: the submit service builds the clients only some records need when one does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from kling_pipeline import clients, wiring
from tests.conftest import EVENTS


@pytest.fixture
def submit_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The submit function's environment as `sam local invoke` gives it (events/env.json)."""
    values = json.loads((EVENTS / "env.json").read_text())["Parameters"]
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    wiring.reset()
    yield
    wiring.reset()


@pytest.mark.usefixtures("submit_environment")
def test_submit_service_builds_no_bucket_topic_or_queue_client_when_built() -> None:
    # Given a fresh container with the submit function's environment
    # When the submit service is built, as the first invocation does
    wiring.submit_service()

    # Then the clients a new job needs exist, and those of prompt files, refusals,
    # retries and pacing waits (S3, SNS, SQS) were not built
    assert clients.dynamodb.cache_info().currsize == 1
    assert clients.stepfunctions.cache_info().currsize == 1
    assert clients.s3.cache_info().currsize == 0
    assert clients.sns.cache_info().currsize == 0
    assert clients.sqs.cache_info().currsize == 0


class Port:
    """A port that counts how often it was built."""

    built = 0

    def __init__(self) -> None:
        Port.built += 1

    def answer(self) -> str:
        return "built"


def test_port_is_built_once_when_many_records_first_use_it_at_once() -> None:
    # Given a port made on first use, not used yet
    Port.built = 0
    port = wiring.on_first_use(Port)
    assert Port.built == 0

    # When eight record threads use it at the same moment
    start = threading.Barrier(8)
    answers: list[str] = []

    def use() -> None:
        start.wait()
        answers.append(port.answer())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then all were answered by one port, built once
    assert answers == ["built"] * 8
    assert Port.built == 1


def test_api_key_is_read_by_one_record_at_a_time_when_a_cold_batch_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a container whose key cache is cold, and a secret store that is slow to answer
    from aws_lambda_powertools.utilities import parameters

    from kling_pipeline.settings import Settings

    inside, most_inside, lock = 0, 0, threading.Lock()

    def slow_secret(name: str, max_age: int) -> str:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        threading.Event().wait(0.02)
        with lock:
            inside -= 1
        return f"key-of-{name}"

    monkeypatch.setattr(parameters, "get_secret", slow_secret)
    settings = Settings(api_key_secret="kling/api-key")

    # When the ten records of a batch read the key at once
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(clients.api_key(settings))) for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every record has the key, and the store was never asked twice at the same time
    # (Powertools' cache answers the later ones; without the lock all ten would miss it)
    assert keys == ["key-of-kling/api-key"] * 10
    assert most_inside == 1
