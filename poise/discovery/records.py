"""What an archive holds, as Python values: entries, their evaluations and the event log, with the
rules of an entry's life (its statuses and how they may move) that `archive.Archive` enforces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from poise.evaluation.keys import metric_value
from poise.evaluation.metrics import CI, mean_ci

SELECT_EVENT = "select"  # one per round, entry_id = the parent chosen
STATUSES = ("proposed", "verified", "evaluating", "evaluated", "rejected", "failed")
IN_FLIGHT = ("proposed", "verified", "evaluating")
TRANSITIONS = {
    "proposed": ("verified", "rejected", "failed"),
    "verified": ("evaluating", "rejected", "failed"),
    "evaluating": ("evaluated", "failed"),
    "evaluated": (), "rejected": (), "failed": (),
}
PURPOSES = ("search", "reeval", "baseline")
SEARCH_PURPOSES = ("search", "baseline")  # the evaluations made during the search, at the run's fidelity


class ArchiveError(RuntimeError):
    pass


def code_hash(code: str) -> str:
    """sha256 of the code with line endings unified, trailing spaces and trailing blank lines removed, so
    that a re-indentation-free copy of the same program is recognised as a duplicate."""
    lines = [ln.rstrip() for ln in code.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()




@dataclass
class Evaluation:
    id: int
    entry_id: int
    seed: int
    purpose: str
    fidelity: str
    trajectory: list[dict] | None  # None when loaded with trajectories=False
    metrics: dict
    wall_s: float
    created_at: float


@dataclass
class Entry:
    id: int
    name: str
    parent_ids: list[int]
    context_ids: list[int]
    generation: int
    directive: str
    proposal: dict
    code: str = field(repr=False)
    code_hash: str = field(repr=False)
    behaviour: str | None
    verification: dict | None
    status: str
    status_reason: str
    reflection: dict | None
    cost: dict
    created_at: float
    updated_at: float
    evaluations: list[Evaluation] = field(default_factory=list, repr=False)

    @property
    def parent_id(self) -> int | None:
        return self.parent_ids[0] if self.parent_ids else None

    def search_evaluations(self, fidelity: str | None = None) -> list[Evaluation]:
        return [e for e in self.evaluations if e.purpose in SEARCH_PURPOSES and fidelity in (None, e.fidelity)]

    @property
    def metrics_by_seed(self) -> dict[int, dict]:
        """{seed: metrics} of the search (and baseline) evaluations. The search runs at one fidelity; if
        a seed was run at two, the later row wins: filter `evaluations` by fidelity instead."""
        return {e.seed: e.metrics for e in self.search_evaluations()}

    def metric_values(self, key: str, fidelity: str | None = None) -> list[float]:
        return [metric_value(e.metrics, key) for e in self.search_evaluations(fidelity)]

    def mean_metric(self, key: str, fidelity: str | None = None) -> float:
        """Mean over seeds of "overall" | "hard_pass1" | "length" | "validity" (or any top-level key) over
        the search evaluations; nan when there are none."""
        vals = self.metric_values(key, fidelity)
        return sum(vals) / len(vals) if vals else float("nan")

    def metric_ci(self, key: str, fidelity: str | None = None) -> CI:
        """Mean and 95% t-interval over seeds (nan half-width with one seed); raises with no evaluation."""
        return mean_ci(self.metric_values(key, fidelity))


@dataclass
class Event:
    id: int
    ts: float
    entry_id: int | None
    kind: str
    payload: dict
