"""The propose phase of the loop: what the proposer is shown (the parent, the whole archive as evidence,
the tiered references), asking it, and archiving its proposals; and where each entry sits in mechanism
space (the features selection's GP and diversity terms use)."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Callable

from poise.agents import offline
from poise.agents.llm import BudgetExhausted
from poise.agents.roles import Agents
from poise.agents.types import AgentFailure, ArchiveNode, ProposalContext
from poise.discovery.archive import Archive, Entry
from poise.discovery.objective import Objective
from poise.discovery.state import Candidate, RunState
from poise.verify.static import config_literal


def node(c: Candidate) -> ArchiveNode:
    """An archive entry as the proposer reads it."""
    e, refl = c.entry, c.entry.reflection or {}
    return ArchiveNode(
        id=e.id, name=e.name, design=offline.design_of(e.proposal), status=e.status, score=c.score,
        parent_id=e.parent_id, operator=(e.proposal or {}).get("operator", ""),
        suggestions=list(refl.get("suggestions", [])), diagnosis=refl.get("diagnosis", ""),
        metrics=c.search, mechanism=(e.proposal or {}).get("mechanism", ""), ideas=list(refl.get("ideas", [])))


def build(state: RunState, parent_id: int, objective: Objective, n: int, round: int,
          rng: random.Random) -> ProposalContext:
    """The proposer's context for a round whose parent is ``parent_id``."""
    parent = state.find(parent_id)
    assert parent is not None, parent_id
    nodes = [node(c) for c in state.candidates]
    pnode = next(x for x in nodes if x.id == parent_id)
    return ProposalContext(parent=pnode, parent_code=parent.entry.code,
                           parent_math=(parent.entry.proposal or {}).get("math", ""), nodes=nodes,
                           references=references(pnode, nodes, objective, state.baseline.search),
                           objective_text=objective.describe(), objective_weights=objective.weights(),
                           baseline_metrics=state.baseline.search, n=n, round=round, rng=rng)


def ask(archive: Archive, agents: Agents, ctx: ProposalContext, parent: Entry, scores: list, strategy: str,
        directive: str, say: Callable[[str], None]) -> tuple[int, str | None, bool]:
    """Ask the proposer for the round's proposals and archive them as "proposed" entries, with the
    round's "select" event. (proposals made, why the proposer gave none or None, the LLM budget ran out)."""
    rnd = ctx.round
    if agents.llms["proposer"] is not None:
        say(f"round {rnd}: asking {agents.llms['proposer'].spec.label} for {ctx.n} proposal(s) from "
            f"#{parent.id} {parent.name}")
    failure, spent = None, False
    try:
        props = agents.propose(ctx)
    except BudgetExhausted as e:
        props, failure, spent = [], str(e), True
        say(f"{e}: no new proposals; finishing what is in flight")
    except AgentFailure as e:
        props, failure = [], e.reason
        archive.log("agent_failed", parent.id, role=e.role, reason=e.reason[:2000], answer=e.answer[:4000], round=rnd)
        say(f"round {rnd}: the proposer failed: {e.reason[:200]}")
    usage = agents.take_usage()
    top = {s.node_id: s for s in scores}.get(parent.id)
    archive.log("select", parent.id, strategy=strategy, round=rnd, score=dataclasses.asdict(top) if top is not None
                else None, references=[r.id for _, r in ctx.references], tiers=[t for t, _ in ctx.references],
                proposals=[p.name for p in props], proposer_failure=failure, llm=usage.as_cost())
    say(f"round {rnd}: parent #{parent.id} {parent.name}"
        + (f" -> {', '.join(p.name for p in props)}" if props else " (no new proposal)"))
    for p in props:
        eid = archive.add_entry(p.name, "", p.to_dict(), p.builds_on[:1], parent.generation + 1, directive,
                                context_ids=p.builds_on[1:])
        if usage.calls or usage.tokens:  # the proposer's call, shared by the proposals it produced
            archive.add_cost(eid, **{k: v / len(props) for k, v in usage.as_cost().items()})
    return len(props), failure, spent


def references(parent: ArchiveNode, nodes: list[ArchiveNode], objective: Objective,
               baseline: dict) -> list[tuple[str, ArchiveNode]]:
    """The tiered references: (tier, node) for the Pareto front, a complementary node, an exploratory
    (failed or rejected) one."""
    scored = [n for _, n in sorted(((n.score, n) for n in nodes if n.score is not None and n.id != parent.id),
                                   key=lambda t: -t[0])]
    refs = [("pareto", n) for n in scored[:2]]  # the Pareto tier, approximated by the best by the objective
    pm = parent.metrics
    want = {k: w for k, w in objective.weights().items() if w > 0 and k in pm}
    if want:  # complementary: the best node on the objective term where the parent is weakest vs the baseline
        sign = lambda k: -1.0 if k == "length" else 1.0
        weakest = min(want, key=lambda k: sign(k) * (pm[k] - baseline.get(k, pm[k])))
        comp = max((n for n in scored if weakest in n.metrics), key=lambda n: sign(weakest) * n.metrics[weakest],
                   default=None)
        if comp is not None and all(comp.id != r.id for _, r in refs):
            refs.append(("complementary", comp))
    failed = [n for n in nodes if n.status in ("failed", "rejected")]
    if failed:
        refs.append(("exploratory", failed[-1]))
    return refs


def features(e: Entry) -> list[float]:
    """Where an entry sits in mechanism space, for the GP and diversity terms of selection."""
    d = offline.design_of(e.proposal)
    if d is None:
        return claimed_features(e)
    return [float(d.scale != "std"), float(d.scale.startswith("bernoulli")), float(d.validity == "mask"),
            float(d.all_fail != "zero"), float(d.length != "none"), min(d.length_coef, 3.0) / 3.0,
            float(d.clip_high > 0.2), float(d.loss_agg != "token-mean"), float(d.entropy_coef > 0),
            float(d.baseline != "group_mean")]


def claimed_features(e: Entry) -> list[float]:
    """The same axes as an offline design's, for a free-form (LLM) entry: read from the properties it
    claimed, which the verifier tested, and from its CONFIG literal (read without running the code).
    What no claim reveals (a changed baseline, the length coefficient) stays at GRPO's value."""
    claims = set((e.proposal or {}).get("claims", []))
    cfg = json.loads(config_literal(e.code or ""))
    num = lambda k, default: cfg[k] if isinstance(cfg.get(k), (int, float)) else default
    length = bool(claims & {"length_term_correct_only", "shorter_correct_preferred"})
    return [float("bernoulli_scale" in claims), float("bernoulli_scale" in claims),
            float("invalid_below_valid" in claims), float("all_fail_push_down" in claims), float(length),
            1.0 / 3.0 if length else 0.0, float(num("clip_high", 0.2) > 0.2),
            float(cfg.get("loss_agg", "token-mean") != "token-mean"), float(num("entropy_coef", 0.0) > 0), 0.0]
