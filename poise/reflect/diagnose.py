"""Reflection: a trained candidate's curves and held-out metrics -> a mechanism-level note for the archive.

The paper's reflector (notes, section 7) is an LLM that reads the curves and writes a diagnosis: what
changed, the dynamics it saw, which benchmarks moved, a causal hypothesis (the paper calls its own
attributions correlational), a verdict and suggestions for children. This module is its deterministic
core and its offline stand-in: detectors from ``curves.py`` first, then a verdict, machine-readable
suggestions for an offline proposer, and a paragraph an LLM proposer can read. Same input, same text.

Verdicts:
    keep  the objective improved over the parent beyond noise and training stayed healthy
    fix   mixed (helped one part of the objective and hurt another, or helped with unhealthy dynamics)
          or no measurable effect: the idea may be worth another version
    drop  the objective got worse, or training broke (NaN, entropy collapse, declining reward)
Without a parent to compare against, the verdict judges trainability only. A run with no curves and
no metrics gets the tag ``missing`` and is dropped.

Suggestion vocabulary (``SUGGESTIONS``, emitted in this order):
    revert                   verdict drop: go back to the parent's mechanism
    keep_mechanism           verdict keep: build children on this mechanism
    handle_degenerate_groups many zero-std groups: an explicit rule for all-correct/all-wrong groups
    analytic_variance        weak or sparse signal: analytic Bernoulli-variance normalisation (AV)
    entropy_bonus            entropy collapse (or a plateau with lower entropy than the parent)
    clip_higher              same trigger: a wider upper clip lets unlikely tokens grow (DAPO)
    kl_anchor                KL or entropy blow-up: anchor the policy to the reference
    smaller_step             instability or KL blow-up: smaller or bounded advantages / updates
    sequence_level_agg       instability: aggregate the loss per sequence to damp long-response outliers
    validity_masking         held-out validity below 98% or a falling valid rate: statistics over valid
                             responses only, invalid ones strictly below (VM)
    overlong_shaping         truncation: a soft penalty as responses approach the budget
    length_shaping           the objective asks for short answers and length did not go down
    correctness_gate_length  length went down but accuracy went down too: gate the length term on
                             correctness and difficulty (the paper's DCBE failure vs DACE's fix)
When training accuracy itself declined, hints aimed at its symptoms (degenerate groups, a faded signal,
shorter answers) are withheld: there they are consequences of the decline, not its cause.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from poise.agents.designs import already_has
from poise.evaluation.metrics import diff_ci, mean_ci, t_critical
from poise.reflect.compare import compare, hard_score, mean_metrics
from poise.reflect.curves import (
    DETECTORS,
    MIN_TREND_STEPS,
    OVERALL_TOL,
    TIER_MOVE,
    Finding,
    Trajectory,
    _finite,
    detect_nan,
    end_value,
    mean_trajectory,
    series,
)
from poise.reflect.writing import curve_sentence, hypotheses, metrics_sentence, summary_line

VERDICTS = ("keep", "fix", "drop")

SUGGESTIONS: dict[str, str] = {
    "revert": "revert to the parent's mechanism rather than building on this one",
    "keep_mechanism": "keep this mechanism and vary around it",
    "handle_degenerate_groups": "give all-correct and all-wrong groups an explicit rule (conditional normalisation) "
                                "instead of a zero advantage",
    "analytic_variance": "normalise advantages by the analytic Bernoulli variance so that rare successes get a "
                         "stronger push",
    "entropy_bonus": "add a small entropy bonus or an entropy-aware, zero-centred signal",
    "clip_higher": "widen the upper clip range so that unlikely tokens can still grow",
    "kl_anchor": "anchor the policy to the reference with a KL term",
    "smaller_step": "bound the advantages or the update (smaller scale, tighter clip)",
    "sequence_level_agg": "aggregate the loss per sequence to damp long-response outliers",
    "validity_masking": "compute group statistics over valid responses only and rank invalid ones strictly below",
    "overlong_shaping": "penalise responses softly as they approach the token budget",
    "length_shaping": "add a length term that is zero-centred among correct responses",
    "correctness_gate_length": "gate the length term on correctness and group pass rate, so that only correct "
                               "responses are compressed",
}

# Held-out valid-format rate (percent) below which validity masking is worth trying; the reference
# GRPO runs sit at 98.6-99.3%.
VALIDITY_MIN = 98.0
# End-of-training accuracy below this: most groups are all-wrong, successes are rare (a sparse signal).
SPARSE_ACC = 0.20
# An accuracy drop with severity at least this (about 3x the noise band) is a drop even when the answers
# got shorter: compression that costs that much is not a fix away from working.
SEVERE_DROP = 0.75
# Seed-based noise bands below this many points are not trusted (two or three seeds can agree by luck).
NOISE_FLOOR = 0.5

# Tags that end a candidate on their own (with no benefit) and tags that make a gain "mixed".
COLLAPSE = ("nan", "entropy_collapse", "reward_decline")
UNHEALTHY = ("kl_blowup", "instability", "entropy_blowup", "validity_drop")
# Findings that always count as failures or successes; the length ones depend on the objective.
FAILURE_TAGS = ("nan", "missing", "kl_blowup", "instability", "entropy_collapse", "entropy_blowup", "reward_decline",
                "reward_plateau", "validity_drop", "many_zero_std_groups", "weak_signal", "truncation",
                "overall_down", "hard_down")
SUCCESS_TAGS = ("overall_up", "hard_up")

_CONCISE_RE = re.compile(r"concise|length|short|brev|terse|compress|efficien|fewer tokens|verbos", re.I)
_HARD_RE = re.compile(r"\bhard\b|aime|pass@1|sparse", re.I)


@dataclass(frozen=True)
class Objective:
    """What the directive asks for, as far as the reflection needs it."""

    concise: bool = False  # shorter held-out answers are part of the goal
    hard: bool = False  # the hard tiers' pass@1 is the accuracy that counts, not Overall


def read_objective(text: str) -> Objective:
    """What a free-text goal asks for, read from its words (for a caller with no run objective)."""
    return Objective(concise=bool(_CONCISE_RE.search(text or "")), hard=bool(_HARD_RE.search(text or "")))


def objective_of(objective) -> tuple[Objective, str]:
    """(what the reflection needs, the text it quotes) from a run's objective
    (`poise.discovery.objective.Objective`, read from its terms: length weighed makes it concise, hard
    pass@1 weighed makes the hard tiers count) or from free text."""
    if isinstance(objective, str):
        return read_objective(objective), objective
    w = objective.weights()
    return Objective(concise=w.get("length", 0) > 0, hard=w.get("hard_pass1", 0) > 0), objective.describe()


@dataclass
class Reflection:
    findings: list[Finding] = field(default_factory=list)
    verdict: str = "fix"
    worked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    diagnosis: str = ""
    suggestions: list[str] = field(default_factory=list)  # machine-readable tags the offline proposer reads
    summary: str = ""
    ideas: list[str] = field(default_factory=list)  # an LLM reflector's suggestions, in words
    author: str = "offline"  # "offline" or the model that wrote the diagnosis
    llm_error: str = ""  # why an LLM reflector's diagnosis is missing, when it failed

    def tags(self) -> list[str]:
        return [f.tag for f in self.findings]

    def to_dict(self) -> dict:
        return {"findings": [f.to_dict() for f in self.findings], "verdict": self.verdict,
                "worked": list(self.worked), "failed": list(self.failed), "diagnosis": self.diagnosis,
                "suggestions": list(self.suggestions), "summary": self.summary, "ideas": list(self.ideas),
                "author": self.author, "llm_error": self.llm_error}

    @classmethod
    def from_dict(cls, d: dict) -> "Reflection":
        return cls(findings=[Finding.from_dict(f) for f in d.get("findings", [])], verdict=d.get("verdict", "fix"),
                   worked=list(d.get("worked", [])), failed=list(d.get("failed", [])),
                   diagnosis=d.get("diagnosis", ""), suggestions=list(d.get("suggestions", [])),
                   summary=d.get("summary", ""), ideas=list(d.get("ideas", [])), author=d.get("author", "offline"),
                   llm_error=d.get("llm_error", ""))


# --- inputs ---------------------------------------------------------------------------------------


def _seeds(traj) -> list[Trajectory]:
    """One trajectory or one per seed -> a list of per-seed trajectories."""
    if not traj:
        return []
    return [list(t) for t in traj] if isinstance(traj[0], list) else [list(traj)]


def _metric_list(metrics) -> list[dict]:
    if not metrics:
        return []
    return [m for m in metrics if m] if isinstance(metrics, list) else [metrics]


def _noise(child: list[float], parent: list[float]) -> float | None:
    """95% half-width of child - parent from the seed spread: Welch when both sides have seeds, else the
    spread of the side that has them applied to both (equal variances assumed); None with one seed each."""
    nc, np_ = len(child), len(parent)
    if nc >= 2 and np_ >= 2:
        h = diff_ci(child, parent).half_width
    elif nc >= 2 or np_ >= 2:
        vals = child if nc >= 2 else parent
        h = t_critical(len(vals) - 1) * mean_ci(vals).std * math.sqrt(1 / nc + 1 / np_)
    else:
        return None
    return max(h, NOISE_FLOOR) if math.isfinite(h) else None


def _metric_nan(ms: list[dict]) -> Finding | None:
    bad = [i for i, m in enumerate(ms) if "overall" in m and not _finite(m["overall"])]
    if not bad:
        return None
    return Finding("nan", 1.0, f"held-out Overall is not finite for seed index {', '.join(map(str, bad))}")


# --- verdict and suggestions ----------------------------------------------------------------------


def _state(tags: dict[str, Finding], prefix: str, compared: bool) -> str | None:
    if f"{prefix}_up" in tags:
        return "up"
    if f"{prefix}_down" in tags:
        return "down"
    return "flat" if compared else None


def _concise_verdict(acc: str, length: str, severe: bool, label: str) -> tuple[str, str]:
    """A concise objective: accuracy must hold while answers get shorter."""
    if acc == "down":
        if length == "shorter" and not severe:
            return "fix", f"answers got shorter but {label} fell: the compression costs accuracy"
        if length == "shorter":
            return "drop", f"{label} fell sharply, more than shorter answers can repay"
        return "drop", f"{label} fell and answers did not get shorter"
    if length == "longer":
        if acc == "up":
            return "fix", f"{label} rose but answers got longer, against a concise objective"
        return "drop", "answers got longer with no accuracy gain, against a concise objective"
    if length == "shorter":
        return "keep", "answers got shorter " + (f"and {label} rose" if acc == "up" else "without losing accuracy")
    if acc == "up":
        return "keep", f"{label} rose and answers did not get longer"
    return "fix", "no measurable effect on accuracy or length"


def _accuracy_verdict(acc: str, other: str | None, label: str, other_label: str) -> tuple[str, str]:
    """An accuracy objective: the primary metric decides, the secondary one can make it mixed."""
    if acc == "down":
        return "drop", f"{label} fell beyond noise"
    if acc == "up":
        if other == "down":
            return "fix", f"{label} rose but {other_label} fell"
        return "keep", f"{label} rose beyond noise"
    if other == "up":
        return "fix", f"{label} is within noise but {other_label} rose: promising, not proven"
    if other == "down":
        return "fix", f"{label} is within noise and {other_label} fell"
    return "fix", f"no measurable effect: {label} is within noise of the parent"


def decide(tags: dict[str, Finding], obj: Objective, acc: str | None, other: str | None,
           acc_label: str) -> tuple[str, str]:
    """(verdict, reason). ``acc``: the objective's accuracy metric vs the parent (up/flat/down, None
    without a comparison); ``other``: the secondary one (hard pass@1 when Overall counts, or Overall)."""
    if "nan" in tags:
        return "drop", "training produced non-finite values"
    if "missing" in tags:
        return "drop", "the run left no curves or metrics to judge"
    broke = [t for t in COLLAPSE if t in tags]
    sick = [t for t in UNHEALTHY if t in tags]
    if acc is None:
        if broke:
            return "drop", f"training broke ({', '.join(broke)}); there is no parent to compare against"
        if sick:
            return "fix", (f"it trains, with unhealthy dynamics ({', '.join(sick)}); there is no parent to "
                           "compare against")
        return "keep", "it trains cleanly; with no parent to compare against, this judges trainability only"
    other_label = "hard-tier pass@1" if acc_label == "Overall" else "Overall"
    if obj.concise:
        length = "shorter" if "length_shorter" in tags else "longer" if "length_longer" in tags else "same"
        drop_tag = "overall_down" if acc_label == "Overall" else "hard_down"
        severe = acc == "down" and tags[drop_tag].severity >= SEVERE_DROP
        verdict, reason = _concise_verdict(acc, length, severe, acc_label)
    else:
        verdict, reason = _accuracy_verdict(acc, other, acc_label, other_label)
    # Healthy dynamics are part of the verdict: a gain with a broken run is mixed, no gain with one is a loss.
    if verdict == "keep" and (broke or sick):
        return "fix", f"{reason}, but training was unhealthy ({', '.join(broke + sick)})"
    if verdict == "fix" and broke:
        return "drop", f"{reason}, and training broke ({', '.join(broke)})"
    return verdict, reason


def suggest(tags: dict[str, Finding], verdict: str, obj: Objective, traj: Trajectory, metrics: dict,
            compared: bool) -> list[str]:
    """Mechanism hints from the fixed vocabulary, in SUGGESTIONS order."""
    want: set[str] = set()
    if verdict == "drop":
        want.add("revert")
    if verdict == "keep":
        want.add("keep_mechanism")
    # When training accuracy itself declined, all-wrong groups, a fading advantage and shrinking answers
    # are consequences of the decline, not its cause: hints aimed at them would send children astray.
    declined = "reward_decline" in tags or "nan" in tags
    if "many_zero_std_groups" in tags and not declined:
        want.add("handle_degenerate_groups")
    acc = series(traj, "accuracy") or series(traj, "reward")
    if ("weak_signal" in tags or (acc and end_value(acc) < SPARSE_ACC)) and not declined:
        want.add("analytic_variance")
    if "entropy_collapse" in tags or ("reward_plateau" in tags and "entropy_lower" in tags):
        want |= {"entropy_bonus", "clip_higher"}
    if "kl_blowup" in tags or "entropy_blowup" in tags:
        want.add("kl_anchor")
    if "instability" in tags or "kl_blowup" in tags:
        want.add("smaller_step")
    if "instability" in tags:
        want.add("sequence_level_agg")
    if "validity_drop" in tags or (_finite(metrics.get("validity")) and metrics["validity"] < VALIDITY_MIN):
        want.add("validity_masking")
    if "truncation" in tags:
        want.add("overlong_shaping")
    shorter = "length_shorter" in tags if compared else "length_drift_down" in tags
    if obj.concise and not shorter:
        want.add("length_shaping")
    if shorter and not declined and any(t in tags for t in ("overall_down", "hard_down")):
        want.add("correctness_gate_length")
    return [s for s in SUGGESTIONS if s in want]


# --- comparison with the parent -------------------------------------------------------------------


@dataclass
class Comparison:
    """What the parent comparison produced, for the text and the summary."""

    parent: str = ""
    findings: list[Finding] = field(default_factory=list)
    overall: bool = False  # Overall was compared
    hard: bool = False  # hard-tier pass@1 was compared
    d_overall: float | None = None
    tol: float | None = None
    tol_from: str = ""  # where the noise band comes from, quoted with it
    d_hard: float | None = None
    d_len: float | None = None


def _compare_with_parent(traj: Trajectory, m: dict, ms: list[dict], parent: dict | None) -> Comparison:
    if not parent:
        return Comparison()
    c = Comparison(parent=str(parent.get("name") or "the parent"))
    pseeds, pms = _seeds(parent.get("trajectory")), _metric_list(parent.get("metrics"))
    ptraj, pm = mean_trajectory(pseeds), mean_metrics(pms)
    ci = {}
    if _finite(m.get("overall")) and _finite(pm.get("overall")):
        c.overall = True
        ci["overall"] = _noise([x["overall"] for x in ms], [x["overall"] for x in pms])
        c.d_overall = m["overall"] - pm["overall"]
        c.tol = ci["overall"] if ci["overall"] is not None else OVERALL_TOL
        c.tol_from = (f"95% half-width over {len(ms)} and {len(pms)} search seeds" if ci["overall"] is not None
                      else "assumed: one search seed each")
    hc = hard_score(m) if m.get("tiers") else None
    hp = hard_score(pm) if pm.get("tiers") else None
    if hc is not None and hp is not None:
        c.hard = True
        ci["hard"] = _noise([v for v in map(hard_score, ms) if v is not None],
                            [v for v in map(hard_score, pms) if v is not None])
        c.d_hard = hc - hp
    if _finite(m.get("length")) and _finite(pm.get("length")) and pm["length"] > 0:
        c.d_len = m["length"] / pm["length"] - 1
    c.findings = compare(traj, m, ptraj, pm, {k: v for k, v in ci.items() if v is not None})
    return c


# --- the reflection -------------------------------------------------------------------------------

_CURVE_TAGS = ("nan", "missing", "entropy_collapse", "entropy_blowup", "reward_plateau", "reward_decline",
               "length_drift_up", "length_drift_down", "instability", "kl_blowup", "validity_drop",
               "many_zero_std_groups", "truncation", "weak_signal")


def _curve_findings(seeds: list[Trajectory], traj: Trajectory, ms: list[dict], m: dict) -> list[Finding]:
    """NaN per seed (a short seed's tail is cut from the average), then every other detector on the
    seed average."""
    findings = []
    nan_parts = [f.evidence for f in (detect_nan(t) for t in seeds) if f]
    if nan_parts:
        findings.append(Finding("nan", 1.0, "; ".join(sorted(set(nan_parts)))))
    elif (mf := _metric_nan(ms)) is not None:
        findings.append(mf)
    if not traj and not m:
        findings.append(Finding("missing", 1.0, "no curves or held-out metrics were given (the run failed "
                                                "before logging anything)"))
    return findings + [f for f in (d(traj) for d in DETECTORS if d is not detect_nan) if f is not None]


def reflect(proposal: dict, trajectory, metrics, parent: dict | None = None, objective="") -> Reflection:
    """Diagnose one evaluated candidate. ``trajectory``: one list of per-step rows or one per seed;
    ``metrics``: held-out metrics, one dict or one per seed; ``parent``: {"name", "trajectory",
    "metrics"} (same shapes) or None; ``objective``: the run's `Objective`, or a goal in words.
    Deterministic: same inputs, same Reflection."""
    proposal = proposal or {}
    name = str(proposal.get("name") or "the candidate")
    mech = str(proposal.get("mechanism") or proposal.get("hypothesis") or proposal.get("description") or "").strip()
    obj, objective_text = objective_of(objective)

    seeds, ms = _seeds(trajectory), _metric_list(metrics)
    traj, m = mean_trajectory(seeds), mean_metrics(ms)
    cmp = _compare_with_parent(traj, m, ms, parent)
    findings = _curve_findings(seeds, traj, ms, m) + cmp.findings
    tags: dict[str, Finding] = {}
    for f in findings:
        tags.setdefault(f.tag, f)

    if obj.hard and cmp.hard:
        acc, other, acc_label = _state(tags, "hard", True), _state(tags, "overall", cmp.overall), "hard-tier pass@1"
    else:
        acc, other, acc_label = _state(tags, "overall", cmp.overall), _state(tags, "hard", cmp.hard), "Overall"
    verdict, reason = decide(tags, obj, acc, other, acc_label)
    # a suggestion is a change from the candidate's own design, never the mechanism it already has
    suggestions = [s for s in suggest(tags, verdict, obj, traj, m, cmp.overall) if not already_has(proposal, s)]

    # Length counts for or against only when the objective asks for short answers.
    fails = set(FAILURE_TAGS) | ({"length_longer", "length_drift_up"} if obj.concise else set())
    wins = set(SUCCESS_TAGS) | ({"length_shorter", "length_drift_down"} if obj.concise else set())
    worked = [f"{f.tag}: {f.evidence}" for f in findings if f.tag in wins]
    failed = [f"{f.tag}: {f.evidence}" for f in findings if f.tag in fails]

    # The note: what changed, what the curves show, what moved, a hypothesis, the verdict, next steps.
    n_seeds, steps = max(len(seeds), len(ms)), len(traj)
    plural = lambda k, word: f"{k} {word}{'s' if k != 1 else ''}"  # noqa: E731
    text = [f"{name} changes the algorithm as follows: {mech.rstrip('.')}." if mech
            else f"{name}: the proposal gives no mechanism description."]
    text.append(f"It was trained for {plural(steps, 'step')} on {plural(n_seeds, 'seed')}"
                + (f" and is compared with its parent {cmp.parent}." if parent
                   else ", with no parent to compare against."))
    text.append(curve_sentence(traj, seeds))
    if 0 < steps < MIN_TREND_STEPS:
        text.append(f"With only {plural(steps, 'step')}, trends are not read; only level checks apply.")
    curve_flags = sorted((f for f in findings if f.tag in _CURVE_TAGS), key=lambda f: -f.severity)
    if curve_flags:
        text.append("The detectors flag " + "; ".join(f"{f.tag} ({f.evidence})" for f in curve_flags[:5]) + ".")
    elif steps >= MIN_TREND_STEPS:
        text.append("No detector fired: no non-finite values, entropy collapse or blow-up, instability, KL "
                    "blow-up, plateau, decline or drift beyond the thresholds.")
    elif steps:
        text.append("No level check fired: no non-finite values, KL blow-up, zero-std groups, truncation or "
                    "weak signal.")
    text.append(metrics_sentence(m))
    if cmp.findings:
        text.append("Against the parent: " + "; ".join(f.evidence for f in cmp.findings) + ".")
    elif parent:
        text.append("The parent's held-out metrics are missing, so nothing is compared.")
    if cmp.overall and "per_tier" not in tags:
        text.append(f"No tier moved by {TIER_MOVE:g} points or more.")
    hyp = hypotheses(tags, acc, mech or "the new mechanism", obj)
    text.append(f"Hypothesis ({plural(n_seeds, 'seed')}, so correlational, not an attribution): "
                + "; ".join(hyp) + ".")
    if objective_text.strip():
        text.append(f"Objective: \"{objective_text.strip()}\".")
    text.append(f"Verdict: {verdict}, because {reason}.")
    hints = [SUGGESTIONS[s] for s in suggestions if s not in ("revert", "keep_mechanism")]
    if hints:
        text.append("For children: " + "; ".join(hints) + ".")
    elif verdict == "keep":
        text.append("For children: keep this mechanism and test it on more seeds or combine it with another "
                    "kept mechanism.")
    elif verdict == "drop":
        text.append("For children: return to the parent's mechanism; this direction is not worth refining.")

    return Reflection(findings=findings, verdict=verdict, worked=worked, failed=failed, diagnosis=" ".join(text),
                      suggestions=suggestions, summary=summary_line(verdict, failed, cmp, m))


# --- digest for proposers ---------------------------------------------------------------------------


def evidence_digest(reflections: list[tuple[str, Reflection]], limit: int = 8) -> str:
    """Past reflections, most informative first, one line each: verdicts keep and drop (clear evidence,
    for and against) before fix, then the strongest findings first, then archive order. ``limit`` caps
    the number of lines, so the digest fits a proposer's context."""
    rank = {"drop": 0, "keep": 0, "fix": 1}

    def strength(r: Reflection) -> float:
        return max((f.severity for f in r.findings if f.tag in FAILURE_TAGS or f.tag in SUCCESS_TAGS), default=0.0)

    order = sorted(range(len(reflections)),
                   key=lambda i: (rank.get(reflections[i][1].verdict, 2), -strength(reflections[i][1]), i))
    lines = []
    for i in order[:max(0, limit)]:
        name, r = reflections[i]
        line = f"- {name}: {r.summary or r.verdict}"
        if r.suggestions:
            line += f"; next: {', '.join(r.suggestions)}"
        lines.append(line if len(line) <= 400 else line[:397] + "...")
    if not lines:
        return "No past reflections."
    hidden = len(reflections) - len(lines)
    head = f"Past reflections ({len(lines)} of {len(reflections)}, most informative first):"
    left = [reflections[i][1].verdict for i in order[len(lines):]]
    tail = [f"({hidden} more omitted: " + ", ".join(f"{left.count(v)} {v}" for v in VERDICTS if v in left) + ")"] \
        if hidden > 0 else []
    return "\n".join([head, *lines, *tail])
