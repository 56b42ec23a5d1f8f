"""The reflect phase of the loop: a trained (or failed) candidate's evaluations become its archived
reflection, written by the detectors (`diagnose.reflect`) and, when an LLM plays the reflector,
rewritten by it over the detectors' findings. A failure in training is evidence too."""

from __future__ import annotations

import dataclasses

from poise.agents.llm import BudgetExhausted
from poise.agents.roles import Agents
from poise.discovery.archive import Archive, Entry
from poise.reflect.curves import Finding
from poise.reflect.diagnose import Reflection, reflect


def reflect_entry(archive: Archive, e: Entry, objective, agents: Agents, *, use_llm: bool = True,
                  failure: str | None = None) -> bool:
    """Write ``e``'s reflection into the archive (``objective``: the run's `Objective`); ``use_llm``
    False keeps the detectors' one. True when the LLM budget ran out on the way."""
    spent = False
    evs = e.search_evaluations()
    parent = None
    if e.parent_ids:
        pe = archive.get(e.parent_ids[0])
        pevs = pe.search_evaluations()
        if pevs:
            parent = {"name": pe.name, "trajectory": [v.trajectory for v in pevs],
                      "metrics": [v.metrics for v in pevs]}
    if failure is not None or not evs:
        r = failure_reflection(e, failure or "no evaluation finished")
    else:
        trajs, ms = [v.trajectory for v in evs], [v.metrics for v in evs]
        r = reflect(e.proposal or {}, trajs, ms, parent, objective)
        if use_llm:
            try:
                r = agents.reflect(r, e.proposal or {}, trajs, ms, parent, objective.describe(),
                                   entry_id=e.id, name=e.name)
            except BudgetExhausted as b:
                spent = True
                r = dataclasses.replace(r, llm_error=str(b))
            agents.charge(archive, e.id)
    archive.set_reflection(e.id, r.to_dict())
    return spent


def failure_reflection(e: Entry, reason: str) -> Reflection:
    """A candidate that failed in training is evidence too: its children should not repeat it."""
    head = reason.splitlines()[0][:300]
    return Reflection(
        findings=[Finding("failed", 1.0, head)], verdict="drop", worked=[], failed=[head],
        diagnosis=(f"{e.name} passed verification on synthetic batches but failed in real training: {head}. "
                   f"The mechanism ({(e.proposal or {}).get('mechanism', 'unknown')}) should not be reused as "
                   f"written; a child should change how it handles the case that broke."),
        suggestions=["revert"], summary=f"failed in training: {head[:120]}")
