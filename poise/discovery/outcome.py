"""What a discovery run found: the candidates it confirms on fresh seeds, and its summary (what
`poise discover` prints at the end and writes to summary.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from poise.agents.llm import usage_by_role
from poise.discovery.archive import ArchiveError
from poise.discovery.confirm import Discovery
from poise.discovery.state import Candidate, RunState


@dataclass
class RunSummary:
    root: str
    objective: str
    evaluated: int
    rejected: int
    failed: int
    best_search: list[tuple[int, str, float]]  # (id, name, objective scalar on the search set)
    confirmed: list[Discovery] = field(default_factory=list)
    baseline_confirm: dict = field(default_factory=dict)
    wall_s: float = 0.0
    llm: dict = field(default_factory=dict)  # usage per agent role and in total (empty when no LLM was used)


def to_confirm(state: RunState, top: int, named: list[int]) -> list[Candidate]:
    """The best ``top`` by the objective on the search set, plus the ones the user ``named`` (--confirm)."""
    out = state.top(top)
    for i in named:
        c = state.find(i)
        if c is None or c.status != "evaluated":
            what = "not in the run" if c is None else f"{c.name} is {c.status}, not evaluated"
            raise ArchiveError(f"--confirm {i}: entry #{i} {what}; only an evaluated candidate can be "
                               f"re-evaluated")
        if c.id != 0 and all(c.id != t.id for t in out):
            out.append(c)
    return out


def summarize(root: Path, state: RunState, confirmed: list[Candidate], llm_calls: list[dict]) -> RunSummary:
    """The run's summary; ``confirmed``: the candidates it re-evaluated (`to_confirm` of the same state)."""
    c = state.counts()
    best = [(x.id, x.name, round(x.score, 3)) for x in state.top(5) if x.score is not None]
    out = RunSummary(str(root), state.objective.describe(), c.get("evaluated", 0), c.get("rejected", 0),
                     c.get("failed", 0), best, llm=usage_by_role(llm_calls))
    if state.baseline_confirm:
        out.baseline_confirm = state.baseline_confirm
        out.confirmed = [c.confirmation for c in confirmed if c.confirmation is not None]
    return out
