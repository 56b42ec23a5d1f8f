"""The offline researcher: proposes, implements and repairs candidate algorithms with no LLM.

It reasons at the level of *mechanisms*, the way the paper's agents do, over a small explicit model
of a GRPO-family advantage estimator (``Design``): which baseline, which scale, how invalid responses
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
from typing import Callable, Sequence

from poise.agents.types import AgentFailure, ArchiveNode, Proposal, ProposalContext

# ---------------------------------------------------------------------------------------------------
# The design space


@dataclass(frozen=True)
class Design:
    """A GRPO-family algorithm described by its mechanisms. The default is GRPO itself."""

    baseline: str = "group_mean"  # group_mean | leave_one_out
    scale: str = "std"  # std (empirical, unbiased) | none | bernoulli (analytic p(1-p)) | bernoulli_smoothed
    validity: str = "none"  # none | mask (statistics over valid responses; invalid below every valid one)
    all_fail: str = "zero"  # zero | push_invalid (in groups with no correct answer, invalid responses get -delta)
    length: str = "none"  # none | correct_gated (DACE-like) | correct | unconditional
    length_coef: float = 0.0
    length_bounded: bool = False  # the length term is kept below the correct-wrong gap
    clip_high: float = 0.2
    loss_agg: str = "token-mean"
    entropy_coef: float = 0.0

    def key(self) -> str:
        return repr(dataclasses.astuple(self))

    def tags(self) -> list[str]:
        """The compositional acronym parts, outermost (most recent kind of change) first, as the paper names them."""
        t = []
        if self.length != "none":
            # the weight is part of the name when it is not the operator's first choice (DACE2 = lambda 2)
            lam = "" if self.length_coef in (0.5, 0.3) else f"{self.length_coef:g}".replace(".", "p")
            t.append({"correct_gated": "DACE", "correct": "CL", "unconditional": "UL"}[self.length] + lam)
        if self.entropy_coef > 0:
            t.append("EB")
        if self.clip_high > 0.2:
            t.append("CH")
        if self.loss_agg != "token-mean":
            t.append("SA")
        if self.all_fail == "push_invalid":
            t.append("FP")
        if self.validity == "mask":
            t.append("VM")
        t.append({"std": "", "none": "NS", "bernoulli": "AV", "bernoulli_smoothed": "SAV"}[self.scale])
        if self.baseline == "leave_one_out":
            t.append("LOO")
        return [x for x in t if x]

    def name(self) -> str:
        return "-".join(self.tags() + ["GRPO"])

    def claims(self) -> list[str]:
        """Properties the verifier must confirm for this design (poise.verify.properties)."""
        out = ["correct_above_wrong"]
        if self.validity == "mask":
            out.append("invalid_below_valid")
        if self.length in ("correct_gated", "correct"):
            out += ["length_term_correct_only", "shorter_correct_preferred"]
        elif self.length == "none":
            if self.validity == "none" and self.baseline == "group_mean":
                out.append("zero_mean_mixed")
            if self.all_fail == "zero":
                out.append("all_fail_zero")
        # push_invalid needs no claim of its own: the probe's all-fail groups are often all valid, where it
        # rightly does nothing; zero_mean_mixed and correct_above_wrong still pin the rest of the estimator
        if (self.scale == "bernoulli" and self.baseline == "group_mean" and self.length == "none"):
            out.append("bernoulli_scale")
        return out

    def hooks(self) -> list[str]:
        return ["compute_advantages"]


GRPO = Design()


# ---------------------------------------------------------------------------------------------------
# Mechanism-level changes


@dataclass(frozen=True)
class Operator:
    name: str
    applies: Callable[[Design], bool]
    apply: Callable[[Design], Design]
    hypothesis: str
    mechanism: str
    math: str
    expected: str
    answers: frozenset[str] = frozenset()  # reflection suggestions this change responds to
    moves: frozenset[str] = frozenset()  # objective metrics it is meant to improve
    prior: float = 1.0


def _r(**kw) -> Callable[[Design], Design]:
    return lambda d: dataclasses.replace(d, **kw)


OPERATORS: tuple[Operator, ...] = (
    Operator(
        "analytic_variance", lambda d: d.scale in ("std", "none"), _r(scale="bernoulli"),
        "With a binary reward the group std is a noisy estimate of a known quantity: the Bernoulli "
        "variance p(1-p) of the group's pass rate. Dividing by the analytic value gives a rare success in "
        "a mostly-failing group a larger, less noisy push than the empirical std does.",
        "Scale centred scores by the analytic Bernoulli std of the group pass rate instead of the "
        "empirical std.",
        "A_i = (c_i - p) / sqrt(p (1 - p) + eps), p = mean of c over the group",
        "larger advantages on hard prompts; hard-tier pass@1 up; entropy similar",
        frozenset({"analytic_variance"}), frozenset({"overall", "hard_pass1"}), 1.3),
    Operator(
        "smoothed_variance", lambda d: d.scale == "bernoulli", _r(scale="bernoulli_smoothed"),
        "The analytic scale explodes near p = 0 or 1 (tiny variance); a Beta(1, 1) prior on the pass rate "
        "keeps the scale bounded on nearly-degenerate groups while keeping the rare-success boost.",
        "Replace p by the smoothed p~ = (k + 1) / (G + 2) in the analytic variance.",
        "A_i = (c_i - p) / sqrt(p~ (1 - p~)), p~ = (k + 1) / (G + 2)",
        "steadier gradient norms than plain analytic variance",
        frozenset({"smaller_step", "kl_anchor"}), frozenset({"overall"}), 0.8),
    Operator(
        "drop_std", lambda d: d.scale == "std", _r(scale="none"),
        "Dividing by the group std up-weights prompts that are nearly solved or nearly hopeless "
        "(difficulty bias, Dr. GRPO); plain centred rewards weight every prompt by its real uncertainty.",
        "Centre scores by the group mean and do not rescale.",
        "A_i = c_i - mean_g c",
        "smaller advantages overall; less push on near-degenerate prompts",
        frozenset({"smaller_step"}), frozenset({"overall"}), 0.7),
    Operator(
        "leave_one_out", lambda d: d.baseline == "group_mean", _r(baseline="leave_one_out"),
        "A baseline that includes the response itself is biased towards it; the mean of the other G-1 "
        "responses is an unbiased baseline (RLOO).",
        "Use the leave-one-out mean of the other responses' scores as the baseline.",
        "A_i = (c_i - mean_{j != i} c_j) / scale_g",
        "slightly larger advantages in small groups",
        frozenset(), frozenset({"overall"}), 0.6),
    Operator(
        "validity_masking", lambda d: d.validity == "none", _r(validity="mask"),
        "Malformed responses sit in the same group statistics as well-formed wrong ones, so they drag the "
        "baseline and blur the signal; taking the statistics over valid responses only, and putting every "
        "invalid response strictly below every valid one, gives the ordering invalid << valid-wrong < "
        "valid-correct.",
        "Group pass rate and scale over format-valid responses; invalid responses get an advantage one "
        "unit below the group's lowest valid advantage (at most -1).",
        "p_v = sum v c / sum v; A_i = (c_i - p_v)/scale_v if valid, min(-1, min_valid A - 1) otherwise",
        "validity rises or stays high; fewer truncated responses",
        frozenset({"validity_masking", "overlong_shaping"}), frozenset({"validity", "overall"}), 1.1),
    Operator(
        "push_invalid_in_failed_groups", lambda d: d.all_fail == "zero" and d.validity == "none",
        _r(all_fail="push_invalid"),
        "A group where every answer is wrong gives GRPO no signal at all; its malformed or truncated "
        "responses are still worse than its well-formed ones, so a small negative push on them recovers "
        "a format signal from otherwise silent groups (conditional normalisation).",
        "In groups with no correct response, invalid responses get -delta (0.5), valid ones 0.",
        "A_i = -0.5 * (1 - v_i) if sum_g c = 0, else the usual advantage",
        "fewer zero-signal groups; validity up on hard prompts",
        frozenset({"handle_degenerate_groups", "overlong_shaping"}), frozenset({"validity", "hard_pass1"}), 0.9),
    Operator(
        "correctness_gated_length", lambda d: d.length == "none",
        _r(length="correct_gated", length_coef=0.5),
        "Shorter answers are only worth having when they are right: a length term applied to correct "
        "responses alone, ranking them shorter-first and gated by the group pass rate, compresses easy "
        "prompts while hard prompts keep their accuracy signal (correctness-first efficiency shaping).",
        "Add a zero-centred length z-score among each group's correct responses, scaled by the pass rate.",
        "A_i += lambda * p_g * c_i * (mean_{C} L - L_i) / (std_{C} L + eps), lambda = 0.5",
        "mean response length falls; accuracy within noise of the parent",
        frozenset({"length_shaping", "correctness_gate_length"}), frozenset({"length"}), 1.0),
    Operator(
        "stronger_length_term", lambda d: d.length in ("correct_gated", "correct") and d.length_coef < 3.0,
        lambda d: dataclasses.replace(d, length_coef=round(d.length_coef * 2, 3)),
        "The length term did not move the length curve enough within the training budget; doubling its "
        "weight, while it stays correctness-first, should shift probability towards the shorter correct style.",
        "Double lambda of the correctness-gated length term.",
        "lambda <- 2 lambda",
        "length falls further; watch accuracy",
        frozenset({"length_shaping"}), frozenset({"length"}), 0.9),
    Operator(
        "ungate_length", lambda d: d.length == "correct_gated", _r(length="correct"),
        "Gating by the pass rate leaves hard prompts uncompressed; since the term only ranks correct "
        "answers among themselves, it cannot reward wrong ones, so it may be safe on every prompt.",
        "Apply the correct-only length term with gate 1 instead of the pass rate.",
        "A_i += lambda * c_i * (mean_{C} L - L_i) / (std_{C} L + eps)",
        "more compression on hard prompts",
        frozenset({"length_shaping"}), frozenset({"length"}), 0.6),
    Operator(
        "unconditional_length", lambda d: d.length == "none",
        _r(length="unconditional", length_coef=0.3),
        "A length penalty on every response is the simplest way to shorten outputs.",
        "Subtract a group-normalised length z-score from every response's advantage.",
        "A_i -= lambda * (L_i - mean_g L) / (std_g L + eps), lambda = 0.3",
        "length falls; risk: short and wrong answers are rewarded too (the paper's DCBE failure)",
        frozenset(), frozenset({"length"}), 0.3),
    Operator(
        "clip_higher", lambda d: d.clip_high <= 0.2, _r(clip_high=0.28),
        "A symmetric clip limits how fast unlikely tokens can gain probability, which drives entropy "
        "collapse; a higher upper clip (DAPO's clip-higher) lets low-probability good tokens rise.",
        "Raise the upper PPO clip from 0.2 to 0.28.",
        "ratio clipped to [1 - 0.2, 1 + 0.28]",
        "entropy stays higher",
        frozenset({"clip_higher"}), frozenset({"overall", "hard_pass1"}), 0.8),
    Operator(
        "entropy_bonus", lambda d: d.entropy_coef == 0, _r(entropy_coef=0.001),
        "Exploration dies when entropy collapses; a small entropy bonus keeps sampling diverse enough for "
        "groups to contain both successes and failures.",
        "Add an entropy bonus of 0.001 to the loss.",
        "loss -= 0.001 * mean token entropy",
        "entropy stays higher; fewer all-fail or all-pass groups",
        frozenset({"entropy_bonus"}), frozenset({"hard_pass1"}), 0.6),
    Operator(
        "sequence_mean_loss", lambda d: d.loss_agg == "token-mean", _r(loss_agg="seq-mean-token-mean"),
        "Token-mean aggregation gives long responses more weight in the loss; averaging per sequence "
        "first weights every response equally, which damps updates dominated by a few long rollouts.",
        "Aggregate the loss as the mean over sequences of the per-sequence token mean.",
        "loss = mean_i (sum_t l_it m_it / sum_t m_it)",
        "steadier gradient norms; length less favoured",
        frozenset({"sequence_level_agg", "smaller_step"}), frozenset({"length"}), 0.5),
)

OPERATOR_BY_NAME = {op.name: op for op in OPERATORS}


# What a design that already has the mechanism a reflection suggests looks like. A suggestion with no
# entry here (a KL anchor, a smaller step, overlong shaping) is never taken as present.
_HAS = {
    "analytic_variance": lambda d: d.scale in ("bernoulli", "bernoulli_smoothed"),
    "validity_masking": lambda d: d.validity == "mask",
    "handle_degenerate_groups": lambda d: d.all_fail != "zero",
    "length_shaping": lambda d: d.length != "none",
    "correctness_gate_length": lambda d: d.length == "correct_gated",
    "clip_higher": lambda d: d.clip_high > 0.2,
    "entropy_bonus": lambda d: d.entropy_coef > 0,
    "sequence_level_agg": lambda d: d.loss_agg != "token-mean",
}


def already_has(proposal: dict | None, suggestion: str) -> bool:
    """Whether a candidate written by this proposer already has the mechanism ``suggestion`` asks for
    (AV-GRPO already normalises by the analytic variance). False for a free-form candidate, whose
    mechanisms are not known, and for a suggestion no design field expresses."""
    d = design_of(proposal)
    return d is not None and suggestion in _HAS and _HAS[suggestion](d)


# The fields of a design a crossover may carry over from a reference, with the operator that stands for it.
_MECHANISM_FIELDS = {
    "scale": "analytic_variance", "validity": "validity_masking", "all_fail": "push_invalid_in_failed_groups",
    "length": "correctness_gated_length", "clip_high": "clip_higher", "loss_agg": "sequence_mean_loss",
    "entropy_coef": "entropy_bonus", "baseline": "leave_one_out",
}


# ---------------------------------------------------------------------------------------------------
# Proposals


def baseline_proposal() -> dict:
    """The archive's root entry, GRPO, as a proposal of the GRPO design."""
    return {"name": "GRPO", "hypothesis": "the starting point", "mechanism": "GRPO (group-normalised outcome "
            "advantages, PPO clip 0.2, token-mean)", "math": "A_i = (r_i - mean_g r) / (std_g r + eps)",
            "claims": GRPO.claims(), "operator": "", "design": dataclasses.asdict(GRPO), "author": "builtin"}


def design_of(node_proposal: dict | None) -> Design | None:
    if not node_proposal or not node_proposal.get("design"):
        return None  # not the offline proposer's (an LLM's free-form proposal has no design)
    try:
        return Design(**node_proposal["design"])
    except TypeError:
        return None


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
