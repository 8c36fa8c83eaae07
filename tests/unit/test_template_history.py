"""Every allowed poll deadline fits a Standard execution's 25,000 history events, counted from
template.yaml's parameter bounds and the state machine definition."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kling_local.cfn import Template

ROOT = Path(__file__).resolve().parents[2]
HISTORY_LIMIT = 25_000
#: Retried Lambda calls (3 events each) come from transient WaveSpeed or Lambda errors; a tenth
#: of the history is kept for them (about 830 retried calls in one job).
RETRY_RESERVE = HISTORY_LIMIT // 10
#: Events a state adds to the history each time it runs (Step Functions history event types):
#: Wait/Choice/Pass/Succeed: <Type>StateEntered + <Type>StateExited; Fail: entered + the
#: execution's own end; a Lambda task: TaskStateEntered, LambdaFunctionScheduled, ...Started,
#: ...Succeeded, TaskStateExited; a callback task adds TaskSubmitted.
EVENTS = {"Wait": 2, "Choice": 2, "Pass": 2, "Succeed": 2, "Fail": 2}
TASK_EVENTS = 5
CALLBACK_TASK_EVENTS = 6
RETRY_EVENTS = 3  # another ...Scheduled, ...Started and the ...Failed/TimedOut that retried it
EXECUTION_EVENTS = 2  # ExecutionStarted, ExecutionSucceeded/Failed


def _definition() -> dict[str, Any]:
    spec = Template.load().resources["JobStateMachine"]["Properties"]
    document: dict[str, Any] = json.loads((ROOT / spec["DefinitionUri"]).read_text())
    return document


def _events(state: dict[str, Any]) -> int:
    kind = state["Type"]
    if kind == "Task":
        callback = str(state.get("Resource", "")).endswith(".waitForTaskToken")
        return CALLBACK_TASK_EVENTS if callback else TASK_EVENTS
    assert kind in EVENTS, f"count the history events of a {kind} state here"
    return EVENTS[kind]


def _retry_events(state: dict[str, Any]) -> int:
    return RETRY_EVENTS * sum(int(r.get("MaxAttempts", 3)) for r in state.get("Retry", []))


def _successors(state: dict[str, Any]) -> set[str]:
    found = {state["Next"]} if "Next" in state else set()
    found |= {choice["Next"] for choice in state.get("Choices", [])}
    found |= {state["Default"]} if "Default" in state else set()
    found |= {catch["Next"] for catch in state.get("Catch", [])}
    return found


def _cycles(states: dict[str, Any]) -> list[list[str]]:
    """Every simple cycle of the state graph (the definition is small)."""
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(_successors(states[path[-1]])):
            if nxt == path[0]:
                found.append(path)
            elif nxt not in path and nxt > path[0]:
                walk([*path, nxt])

    for start in sorted(states):
        walk([start])
    return found


def _bounds(template: Template, name: str) -> tuple[int, int | None]:
    spec = template.body["Parameters"][name]
    upper = spec.get("MaxValue")
    return int(spec["MinValue"]), None if upper is None else int(upper)


def _waits_for_webhook(states: dict[str, Any], cycle: list[str]) -> bool:
    """A round of this cycle waits for a webhook (the callback task, or the wait that stands in
    for it when the token cannot be parked): it lasts at least WebhookFallbackSeconds."""
    for name in cycle:
        state = states[name]
        if str(state.get("Resource", "")).endswith(".waitForTaskToken"):
            return True
        if state.get("SecondsPath") == "$.schedule.webhook_wait_s":
            return True
    return False


def test_every_allowed_deadline_fits_the_history_limit_at_the_fastest_schedule() -> None:
    # Given the template's poll and webhook bounds and the workflow definition
    template = Template.load()
    states: dict[str, Any] = _definition()["States"]
    _, deadline_max = _bounds(template, "PollDeadlineSeconds")
    _, queued_max = _bounds(template, "QueuedDeadlineSeconds")
    queued_interval_min, _ = _bounds(template, "PollQueuedIntervalSeconds")
    fallback_min, _ = _bounds(template, "WebhookFallbackSeconds")
    first_wait_min, _ = _bounds(template, "PollFirstWaitSeconds")
    interval_min = min(
        _bounds(template, "PollIntervalSeconds")[0], _bounds(template, "PollMaxIntervalSeconds")[0]
    )
    assert deadline_max is not None, "PollDeadlineSeconds needs a MaxValue"
    assert queued_max is not None, "QueuedDeadlineSeconds needs a MaxValue"

    # When the longest run of each loop is counted: the whole allowed queue, then the whole
    # generation deadline, each round as short as the template allows (a timed poll: the
    # shortest interval, or the queued interval while queued; a webhook round: the shortest
    # fallback), plus a round cut short onto each deadline and the one that finds it passed
    cycles = _cycles(states)
    assert cycles, "the poll loop was not found"
    in_loop = {name for cycle in cycles for name in cycle}
    once = sum(_events(s) + _retry_events(s) for n, s in states.items() if n not in in_loop)
    worst_rounds = 0
    for cycle in cycles:
        per_round = sum(_events(states[name]) for name in cycle)
        if _waits_for_webhook(states, cycle):
            queued_round, generation_round = fallback_min, fallback_min
        else:
            queued_round, generation_round = queued_interval_min, interval_min
        rounds = (
            math.ceil(queued_max / queued_round)
            + 1
            + math.ceil((deadline_max - first_wait_min) / generation_round)
            + 2
        )
        worst_rounds = max(worst_rounds, rounds * per_round)
        worst = EXECUTION_EVENTS + rounds * per_round + once + RETRY_RESERVE

        # Then even that run stays under the limit
        assert worst <= HISTORY_LIMIT, (
            f"{' -> '.join(cycle)}: {rounds} rounds x {per_round} events + {once} + reserve "
            f"{RETRY_RESERVE} = {worst}; lower PollDeadlineSeconds or QueuedDeadlineSeconds' "
            "MaxValue, or raise the shortest interval"
        )
    assert worst_rounds > 0


def test_poll_loop_cost_is_counted_per_state_when_a_loop_exists() -> None:
    # Given a wait / check / choose loop whose check may fail over to a notifying task
    states: dict[str, Any] = {
        "Wait": {"Type": "Wait", "SecondsPath": "$.w", "Next": "Check"},
        "Check": {
            "Type": "Task",
            "Resource": "arn:aws:lambda:us-east-1:123456789012:function:poll",
            "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Notify"}],
            "Next": "Ready?",
        },
        "Ready?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.s", "StringEquals": "waiting", "Next": "Wait"}],
            "Default": "Notify",
        },
        "Notify": {"Type": "Task", "Resource": "arn:aws:states:::sns:publish", "End": True},
    }

    # When its cycles and costs are counted
    cycles = _cycles(states)

    # Then the one loop costs 9 events a round, and a retry 3 more per attempt
    assert [sorted(cycle) for cycle in cycles] == [["Check", "Ready?", "Wait"]]
    assert sum(_events(states[name]) for name in cycles[0]) == 9
    assert _retry_events(states["Check"]) == 6
