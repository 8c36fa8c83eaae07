"""Unit tests: the in-memory SQS of the pacing benchmark keeps SQS's rules its figure relies on."""

from __future__ import annotations

from bench.pacing_harness import MemoryQueue, TierSizing
from kling_local.simulator.config import TIERS


def test_a_delayed_message_is_not_received_when_its_delay_has_not_passed() -> None:
    # Given a message sent with a minute's delay, and one without
    queue = MemoryQueue(scale=1.0, visibility_s=30, max_receive_count=2)
    queue.send('{"prompt": "later"}', delay_s=60)
    queue.send('{"prompt": "now"}')

    # When the queue is polled
    records = queue.receive(wait_s=0, window_s=0)

    # Then only the undelayed one comes, on its first receive
    assert [r["body"] for r in records] == ['{"prompt": "now"}']
    assert records[0]["attributes"]["ApproximateReceiveCount"] == "1"


def test_a_message_goes_to_the_dead_letters_when_its_receives_are_spent() -> None:
    # Given a queue that allows 2 receives, and a message whose every attempt fails at once
    queue = MemoryQueue(scale=1.0, visibility_s=30, max_receive_count=2)
    queue.send("doomed")
    counts = []
    for _ in range(3):
        records = queue.receive(wait_s=0, window_s=0)
        for record in records:
            counts.append(record["attributes"]["ApproximateReceiveCount"])
            queue.retry_later(record["receiptHandle"], 0)
        queue.settle([r["receiptHandle"] for r in records], {r["receiptHandle"] for r in records})

    # Then it was received twice, then redriven rather than delivered a third time
    assert counts == ["1", "2"]
    assert queue.dead_letters == ["doomed"]
    assert queue.backlog() == 0


def test_a_re_sent_message_starts_with_a_fresh_receive_count_and_its_own_attributes() -> None:
    # Given a message received once and handled by re-sending it (pacing), then deleted
    queue = MemoryQueue(scale=1.0, visibility_s=30, max_receive_count=2)
    attributes = {"kp-source": {"DataType": "String", "StringValue": "line 3"}}
    queue.send("paced", attributes)
    [first] = queue.receive(wait_s=0, window_s=0)
    queue.resend(first["body"], attributes, 0)
    queue.settle([first["receiptHandle"]], set())

    # When the queue is polled again
    [again] = queue.receive(wait_s=0, window_s=0)

    # Then the copy is a new message with the same body and attributes, on its first receive
    assert again["messageId"] != first["messageId"]
    assert again["body"] == "paced"
    assert again["messageAttributes"] == {
        "kp-source": {"dataType": "String", "stringValue": "line 3"}
    }
    assert again["attributes"]["ApproximateReceiveCount"] == "1"
    assert queue.resent == 1


def test_the_harness_paces_to_the_simulators_rate_when_it_reads_a_tier_from_the_template() -> None:
    # Given each tier's row of template.yaml's Tiers mapping
    for name, preset in TIERS.items():
        # When the harness reads it
        sizing = TierSizing.of(name)

        # Then its rate is the simulator preset's, with at least one function and record
        assert sizing.videos_per_minute == preset.videos_per_minute
        assert sizing.submit_functions >= 1 and sizing.records_at_once >= 1
