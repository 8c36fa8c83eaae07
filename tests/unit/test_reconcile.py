"""Unit tests: an ambiguous submit looked up in the prediction history, never re-sent."""

from __future__ import annotations

from typing import Any

from kling_pipeline import MODEL_ID
from kling_pipeline.submit.reconcile import Reconciler

SENT = 1_700_000_000.0


class ScriptedHistory:
    """The history as it looks at each successive read."""

    def __init__(self, *looks: list[str]) -> None:
        self.looks = list(looks)
        self.reads = 0

    def recent_predictions(
        self, *, model: str, created_after: str, created_before: str, max_pages: int = 5
    ) -> list[dict[str, Any]]:
        ids = self.looks[min(self.reads, len(self.looks) - 1)]
        self.reads += 1
        return [{"id": i, "model": model, "status": "processing"} for i in ids]


class Owners:
    """Prediction owners in memory."""

    def __init__(self, **owned: str) -> None:
        self.owned = dict(owned)

    def owner(self, prediction_id: str) -> str | None:
        return self.owned.get(prediction_id)

    def claim(self, prediction_id: str, job_id: str) -> bool:
        return self.owned.setdefault(prediction_id, job_id) == job_id


def reconciler(history: ScriptedHistory, owners: Owners) -> Reconciler:
    return Reconciler(history, owners, waits_s=(0, 1, 2), sleep=lambda s: None, clock=lambda: SENT)


def test_find_takes_the_task_when_two_looks_agree_on_a_single_candidate() -> None:
    # Given a history showing one unclaimed task, twice
    owners = Owners()
    history = ScriptedHistory(["t-1"], ["t-1"])

    # When reconciling / Then that task is the job's, and claimed for it
    found = reconciler(history, owners).find("job-1", "a fox", SENT, SENT + 30)
    assert found.prediction_id == "t-1"
    assert owners.owned == {"t-1": "job-1"} and history.reads == 2


def test_find_gives_up_when_a_second_candidate_appears() -> None:
    # Given a history where a concurrent submit's task shows up on the second look
    history = ScriptedHistory(["t-1"], ["t-1", "t-2"])

    # When reconciling / Then no task is guessed: both are named as evidence
    found = reconciler(history, Owners()).find("job-1", "a fox", SENT, SENT + 30)
    assert found.prediction_id is None
    assert "t-1" in found.evidence and "t-2" in found.evidence


def test_find_skips_tasks_other_jobs_own() -> None:
    # Given the only task in the window belongs to another job
    history = ScriptedHistory(["t-9"])

    # When reconciling / Then it is not taken; after the last look the job stays unknown
    found = reconciler(history, Owners(**{"t-9": "job-other"})).find("job-1", "p", SENT, SENT)
    assert found.prediction_id is None
    assert MODEL_ID in found.evidence and history.reads == 3


def test_find_skips_tasks_whose_shown_prompt_differs() -> None:
    # Given a history that shows each task's input, with another prompt
    class WithInput(ScriptedHistory):
        def recent_predictions(self, **query: Any) -> list[dict[str, Any]]:
            return [{"id": "t-1", "model": MODEL_ID, "input": {"prompt": "a cat"}}]

    # When reconciling a job whose prompt is "a fox" / Then nothing matches
    found = reconciler(WithInput([]), Owners()).find("job-1", "a fox", SENT, SENT)
    assert found.prediction_id is None
