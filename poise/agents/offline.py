"""The offline researcher: proposes, implements and repairs candidate algorithms with no LLM.

It reasons at the level of *mechanisms*, the way the paper's agents do, over a small explicit model
of a GRPO-family advantage estimator (``Design``, in ``designs.py``): which baseline, which scale, how invalid responses
are treated, what happens in groups where every answer failed, whether length enters and how, and
the clip range, loss aggregation and entropy bonus. A proposal is one mechanism-level change
(an ``Operator``) to the parent's design, or the adoption of a mechanism from a reference entry that
did well where the parent is weak (a crossover). Which change it proposes comes from evidence:

    score(op) = prior(op)
              + w_reflect   if the parent's reflection asks for what op provides
              + w_objective if op moves a metric the directive cares about (length for "concise")
              + w_evidence * mean objective gain of earlier children made with op (archive evidence)
              - w_failure  * earlier failures/rejections of op
              + exploration noise (seeded)

and a design already in the archive is never proposed again. The implementer writes the code of a
design from fragments, one per mechanism, with the proposal's hypothesis and math as the docstring;
it is not a copy of a built-in file (VM-AV-GRPO here is rediscovered as "AV" then "VM" on top of it).
When the verifier reports a failed property, ``implement`` gets the error back and repairs the code
(for example it bounds a length term that let a correct answer fall below a wrong one).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Sequence

from poise.agents.designs import (
    _MECHANISM_FIELDS,
    GRPO,
    OPERATOR_BY_NAME,
    OPERATORS,
    Design,
    Operator,
    already_has,
    design_of,
)
from poise.agents.types import AgentFailure, ArchiveNode, Proposal, ProposalContext

# the design space is in designs.py; these names are the offline researcher's vocabulary, used from here too
__all__ = ["GRPO", "OPERATORS", "OPERATOR_BY_NAME", "ArchiveNode", "Design", "OfflineImplementer", "OfflineProposer",
           "OfflineReflector", "OfflineReviewer", "Operator", "Proposal", "already_has", "baseline_proposal",
           "design_of", "implement", "propose", "render"]

# ---------------------------------------------------------------------------------------------------
# Proposals


def baseline_proposal() -> dict:
    """The archive's root entry, GRPO, as a proposal of the GRPO design."""
    return {"name": "GRPO", "hypothesis": "the starting point", "mechanism": "GRPO (group-normalised outcome "
            "advantages, PPO clip 0.2, token-mean)", "math": "A_i = (r_i - mean_g r) / (std_g r + eps)",
            "claims": GRPO.claims(), "operator": "", "design": dataclasses.asdict(GRPO), "author": "builtin"}


@dataclass
class ProposerConfig:
    w_reflect: float = 2.0
    w_objective: float = 1.5
    w_evidence: float = 0.5  # per point of objective gain of earlier children made with the same change
    w_failure: float = 1.0
    noise: float = 0.5  # scale of the Gumbel exploration noise


def _evidence(op: str, nodes: list[ArchiveNode]) -> tuple[float, int]:
    """(mean objective gain over the parent, number of failures) of earlier children made with ``op``."""
    by_id = {n.id: n for n in nodes}
    gains, failures = [], 0
    for n in nodes:
        if n.operator != op:
            continue
        if n.status in ("failed", "rejected"):
            failures += 1
        parent = by_id.get(n.parent_id) if n.parent_id is not None else None
        if n.score is not None and parent is not None and parent.score is not None:
            gains.append(n.score - parent.score)
    return (sum(gains) / len(gains) if gains else 0.0), failures


def propose(parent: ArchiveNode, nodes: list[ArchiveNode], objective_metrics: dict[str, float], n: int,
            rng: random.Random, references: Sequence[ArchiveNode] = (), cfg: ProposerConfig | None = None
            ) -> list[Proposal]:
    """Up to ``n`` proposals of mechanism-level changes to ``parent``, most promising first.

    ``objective_metrics`` maps the objective's metric names to their weights ("length" present means
    the directive wants shorter answers). ``references`` are the tiered references (Pareto,
    complementary, exploratory) the loop picked; mechanisms of well-scoring references become crossover
    candidates. Designs already in the archive are skipped, so the list may be shorter than ``n``.
    """
    cfg = cfg or ProposerConfig()
    base = parent.design or GRPO
    seen = {nd.design.key() for nd in nodes if nd.design is not None}
    wanted = set(parent.suggestions)
    scored: list[tuple[float, Design, Operator, str, ArchiveNode | None]] = []

    def score_op(op: Operator) -> tuple[float, str]:
        gain, fails = _evidence(op.name, nodes)
        s = op.prior + cfg.w_evidence * gain - cfg.w_failure * fails
        why = []
        if op.answers & wanted:
            s += cfg.w_reflect
            why.append(f"the parent's reflection asks for {', '.join(sorted(op.answers & wanted))}")
        hit = [m for m in op.moves if objective_metrics.get(m, 0) > 0]
        if hit:
            # what a directive adds beyond accuracy (length for "concise") is what the user asked for: it
            # counts fully, whatever its weight in the scalar score
            s += cfg.w_objective * (1.0 + any(m != "overall" for m in hit))
            why.append(f"it targets {', '.join(sorted(hit))}, which the objective weighs")
        if gain:
            why.append(f"earlier children made this way moved the objective by {gain:+.2f} on average")
        if fails:
            why.append(f"{fails} earlier attempt(s) failed")
        return s, "; ".join(why) or "exploration"

    for op in OPERATORS:
        if not op.applies(base):
            continue
        child = op.apply(base)
        s, why = score_op(op)
        scored.append((s, child, op, why, None))
    # crossover: adopt one mechanism of a reference that scored above the parent
    ref: ArchiveNode | None
    for ref in references:
        if ref.design is None or ref.score is None or parent.score is None or ref.score <= parent.score:
            continue
        for f, op_name in _MECHANISM_FIELDS.items():
            theirs = getattr(ref.design, f)
            if theirs == getattr(base, f) or theirs == getattr(GRPO, f):
                continue
            kw = {f: theirs}
            if f == "length":
                kw["length_coef"] = ref.design.length_coef
            child = dataclasses.replace(base, **kw)
            s, _ = score_op(OPERATOR_BY_NAME[op_name])
            s += cfg.w_evidence * (ref.score - parent.score)
            scored.append((s, child, OPERATOR_BY_NAME[op_name],
                           f"{ref.name} scored {ref.score - parent.score:+.2f} above the parent with this mechanism",
                           ref))
    # Gumbel noise makes the choice a seeded sample from softmax(score / noise): exploration
    ranked = sorted(scored, key=lambda t: -(t[0] + cfg.noise * -math.log(-math.log(max(rng.random(), 1e-12)))))
    out: list[Proposal] = []
    for _, child, op, why, ref in ranked:
        if child.key() in seen or child.key() == base.key():
            continue
        seen.add(child.key())
        out.append(_proposal(parent, child, op, why, ref))
        if len(out) >= n:
            break
    return out


def _proposal(parent: ArchiveNode, child: Design, op: Operator, why: str, ref: ArchiveNode | None) -> Proposal:
    hyp = op.hypothesis if ref is None else (
        f"{ref.name} carries a mechanism the parent lacks and scored higher; combining it with "
        f"{parent.name}'s design may keep both gains. {op.hypothesis}")
    return Proposal(
        name=child.name(), hypothesis=hyp,
        mechanism=(f"{parent.name} + {op.name.replace('_', ' ')}" + (f" (from {ref.name})" if ref is not None else "")
                   + f": {op.mechanism}"),
        math=op.math, expected_dynamics=op.expected, claims=child.claims(), hooks=child.hooks(),
        builds_on=[parent.id] + ([ref.id] if ref is not None else []), operator=op.name,
        design=dataclasses.asdict(child), rationale=why)


# ---------------------------------------------------------------------------------------------------
# Implementation: code from a design


def implement(proposal: Proposal, feedback: list[str] | None = None) -> tuple[str, Proposal]:
    """Write the candidate's source. ``feedback`` holds the verifier's errors from the last attempt;
    the implementer repairs what it understands and returns the (possibly amended) proposal."""
    d = Design(**proposal.design)
    if feedback:
        text = " ".join(feedback)
        if d.length != "none" and "correct_above_wrong" in text and not d.length_bounded:
            # the unbounded length term outweighed the correctness gap; keep it strictly inside the gap
            d = dataclasses.replace(d, length_bounded=True)
            proposal = dataclasses.replace(
                proposal, design=dataclasses.asdict(d),
                math=proposal.math + "; the length term is scaled so it stays below half the group's "
                                     "correct-minus-wrong gap")
    return render(d, proposal), proposal


def render(d: Design, proposal: Proposal | None = None) -> str:
    doc_lines = [f"{d.name()}: {proposal.mechanism if proposal else 'a GRPO-family advantage estimator'}", ""]
    if proposal is not None:
        doc_lines += [f"Hypothesis: {proposal.hypothesis}", "", f"Math: {proposal.math}", "",
                      f"Expected dynamics: {proposal.expected_dynamics}"]
    doc = _wrap("\n".join(doc_lines))
    cfg = {"clip_low": 0.2, "clip_high": d.clip_high, "loss_agg": d.loss_agg, "kl_coef": 0.0,
           "entropy_coef": d.entropy_coef}
    if d.length != "none":
        cfg["length_coef"] = d.length_coef
    body = ["gid = batch.group_ids", "c = batch.correct.float()"]
    weight = "None"
    if d.validity == "mask":
        body += ["v = batch.valid.bool()", "c = c * v  # statistics over format-valid responses only"]
        weight = "v"
    if d.baseline == "leave_one_out" or d.scale == "bernoulli_smoothed":
        body += [f"n = group_count(gid, weight={weight})"]
    body += [f"p = group_mean(c, gid, weight={weight})"]
    if d.baseline == "leave_one_out":
        body += ["# the mean of the other responses: (n p - c) / (n - 1); a lone response has no baseline",
                 "base = torch.where(n > 1, (n * p - c) / (n - 1).clamp_min(1.0), c)"]
    else:
        body += ["base = p"]
    if d.scale == "std":
        body += [f"scale = group_std(c, gid, unbiased=True, weight={weight}) + cfg.eps"]
    elif d.scale == "none":
        body += ["scale = torch.ones_like(c)"]
    elif d.scale == "bernoulli":
        body += ["scale = torch.sqrt(p * (1.0 - p) + cfg.eps)  # the analytic Bernoulli std"]
    else:
        body += ["k = n * p",
                 "ps = (k + 1.0) / (n + 2.0)  # Beta(1, 1)-smoothed pass rate",
                 "scale = torch.sqrt(ps * (1.0 - ps))"]
    body += ["adv = (c - base) / scale"]
    if d.length in ("correct_gated", "correct"):
        body += ["L = batch.lengths.float()",
                 "sd = group_std(L, gid, unbiased=True, weight=c)",
                 "# a z-score among the correct responses only: it ranks them, shorter first, and sums to zero",
                 "z = torch.where(sd > 0, (group_mean(L, gid, weight=c) - L) / (sd + cfg.eps), torch.zeros_like(L))",
                 "gate = p" if d.length == "correct_gated" else "gate = torch.ones_like(p)",
                 "term = cfg.get('length_coef', %r) * gate * c * z" % d.length_coef]
        if d.length_bounded:
            body += ["# keep the term inside half the gap between the lowest correct and highest wrong advantage,",
                     "# so a correct answer always outranks a wrong one",
                     "hi_wrong = _group_max(torch.where(c < 1, adv, torch.full_like(adv, -1e9)), gid)",
                     "lo_right = -_group_max(torch.where(c > 0, -adv, torch.full_like(adv, -1e9)), gid)",
                     "room = torch.where((hi_wrong > -1e8) & (lo_right < 1e8), 0.5 * (lo_right - hi_wrong),"
                     " torch.full_like(adv, 1e9))",
                     "bound = _group_max(term.abs(), gid).clamp_min(1e-12)",
                     "term = term * torch.clamp(room / bound, max=1.0)"]
        body += ["adv = adv + term"]
    elif d.length == "unconditional":
        body += ["L = batch.lengths.float()",
                 "sd = group_std(L, gid, unbiased=True)",
                 "z = torch.where(sd > 0, (L - group_mean(L, gid)) / (sd + cfg.eps), torch.zeros_like(L))",
                 "adv = adv - cfg.get('length_coef', %r) * z" % d.length_coef]
    if d.validity == "mask":
        body += ["# every invalid response one unit below its group's lowest valid advantage, and never above -1",
                 "lowest = -_group_max(torch.where(v, -adv, torch.full_like(adv, -1e9)), gid)",
                 "has_valid = lowest < 1e8",
                 "a_inv = torch.where(has_valid, (lowest - 1.0).clamp_max(-1.0), torch.full_like(adv, -1.0))",
                 "adv = torch.where(v, adv, a_inv)"]
    if d.all_fail == "push_invalid":
        body += ["failed = group_mean(c, gid) == 0  # no correct answer in the group: GRPO gives it no signal",
                 "adv = torch.where(failed & ~batch.valid.bool(), torch.full_like(adv, -0.5), adv)"]
    body += ["return to_tokens(adv, batch.mask)"]
    needs_max = d.validity == "mask" or d.length_bounded
    lines = ['"""' + doc + '\n"""', "", "import torch", "",
             "from poise.algorithms.base import group_count, group_mean, group_std, to_tokens", "",
             f"CONFIG = {cfg!r}", ""]
    if needs_max:
        lines += ["", "def _group_max(x, gid):",
                  '    """Per-response maximum of x over its group."""',
                  "    out = torch.full((int(gid.max()) + 1,), -1e9, dtype=x.dtype, device=x.device)",
                  "    out = out.scatter_reduce(0, gid, x, 'amax')",
                  "    return out[gid]", ""]
    lines += ["", "def compute_advantages(batch, cfg):"] + ["    " + b for b in body]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 100) -> str:
    import textwrap
    out = []
    for para in text.split("\n"):
        out.append(textwrap.fill(para, width) if para else "")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# The offline researcher in the four roles (see agents/roles.py for the interfaces)


class OfflineProposer:
    label = "offline"

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        return propose(ctx.parent, ctx.nodes, ctx.objective_weights, ctx.n, ctx.rng, [n for _, n in ctx.references])


class OfflineImplementer:
    label = "offline"

    def implement(self, proposal: Proposal, feedback: list[str] | None, *, entry_id: int, attempt: int,
                  parent_name: str, parent_code: str, previous_code: str = "") -> tuple[str, Proposal]:
        if not proposal.design:
            raise AgentFailure("implementer", "the offline implementer can only write the offline proposer's "
                                              "designs; configure an LLM implementer")
        return implement(proposal, feedback)


class OfflineReviewer:
    """No semantic review: the property tests the verifier runs are the check."""

    label = "offline"

    def review(self, proposal: Proposal, code: str, checks: list[dict], *, entry_id: int,
               attempt: int) -> tuple[bool, list[str]] | None:
        return None


class OfflineReflector:
    """The detectors' reflection (reflect/diagnose.py), as it is."""

    label = "offline"

    def reflect(self, base_reflection, proposal: dict, trajectories: list[list[dict]], metrics: list[dict],
                parent: dict | None, objective_text: str, *, entry_id: int, name: str):
        return base_reflection
