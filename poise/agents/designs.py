"""The offline researcher's design space: a GRPO-family advantage estimator described by its mechanisms
(`Design`), and the mechanism-level changes the offline proposer makes to one (`Operator`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable


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



def design_of(node_proposal: dict | None) -> Design | None:
    if not node_proposal or not node_proposal.get("design"):
        return None  # not the offline proposer's (an LLM's free-form proposal has no design)
    try:
        return Design(**node_proposal["design"])
    except TypeError:
        return None
