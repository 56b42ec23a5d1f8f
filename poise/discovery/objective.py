"""Steering: a natural-language directive becomes the objective the search optimises.

The paper steers POISE with a directive ("accurate and concise") but does not say how the directive
enters the loop (notes §9). Here it enters in two places: the directive text goes verbatim into the
proposer's and reflector's prompts (through `Objective.describe()` and `Objective.directive`), and the
parsed `Objective` defines what "better" means for parent selection (U_pareto, U_perf) and for ranking
discoveries.

Metric keys (means over seeds of the held-out benchmark; see `metric_value`):
    overall     the paper's weighted Overall of the six tiers, percent
    hard_pass1  mean pass@1 at temperature 1 over the pass@k tiers (aime24, aime25, amc), percent
    length      mean response length on the held-out suite, tokens
    validity    mean validity (format) rate, percent

An objective is a list of `Term(name, direction, weight)` and a list of `Constraint`s:
    vector(m)       = (direction_k · m_k for every term k)  -- larger is better in every component; the
                      Pareto front of parent selection is taken over it (weight-0 terms still count here)
    scalar(m, base) = Σ_k weight_k · direction_k · v_k(m)  −  penalty · Σ_c violation_c(m, base)
        with v_k = m_k (percentage points) for overall, hard_pass1 and validity, and
             v_length = 100 · (length / base_length − 1)   (percent change against the GRPO baseline)
    so that one weight unit means "one percentage point" everywhere: under "accurate and concise"
    (length weight 0.25) cutting the length by 4% is worth as much as one point of Overall, and the
    paper's DACE-GRPO (+3.9 Overall, −29% length) scores +11.2 over GRPO. The default scalar is plain
    Overall. The constraint penalty (default 5 points per point of violation) makes a candidate that
    buys brevity with accuracy (the paper's over-compressing DCBE-GRPO) rank low without dropping it
    from the Pareto front, where it may still be a useful parent.

Constraints: `Constraint(name, op, value, relative_to_baseline, tolerance)` means
    m[name] op bound ± slack,  bound = (base[name] if relative_to_baseline else 0) + value,
    slack = the CI half-width passed to `feasible`/`violations` when given and finite, else `tolerance`
(the slack always loosens the constraint). "Accuracy must stay within the baseline's CI" is
`overall >= baseline − h` with h the half-width of the baseline's 95% CI over seeds; with one seed the
CI is undefined and the fixed tolerance (`ACCURACY_TOLERANCE`: about two seed sds of the accuracy metric) is used.

Directive keywords (`parse_directive`; case-insensitive, whole words or word stems):
    | words                                                      | effect                                                  |
    |------------------------------------------------------------|---------------------------------------------------------|
    | (none: no directive)                                       | max overall (w=1) and hard_pass1 (w=0: Pareto only)     |
    | accurate, accuracy, correct, overall, performance, score   | max overall (always present, w=1)                       |
    | hard, sparse, difficult, aime                              | max hard_pass1, w=1                                     |
    | concise, short(er), brief, efficient, length, terse,       | min length, w=0.25, and the constraint                  |
    |   compress, fewer/less tokens                              |   overall >= baseline − tolerance (or the baseline CI)  |
    | valid, validity, invalid, format, well-formed, parse       | max validity, w=0.5                                     |
    | stable, stability, robust, collapse                        | nothing yet (a hook: the loop cannot measure stability  |
    |                                                            |   across seeds); noted, and the text stays in prompts   |
hard_pass1 joins as a Pareto-only term only in the pure-accuracy objective, so that a length directive's
front is over (overall, −length) as in the paper. Negation ("not concise") is not understood. A
directive with no known word falls back to the default accuracy objective and says so in `note`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass

from poise.evaluation.keys import ACCURACY_KEYS, METRIC_KEYS, RELATIVE_KEYS, metric_value

log = logging.getLogger(__name__)


# Defaults of the keyword rules (see the table above).
W_HARD = 1.0
W_LENGTH = 0.25
W_VALIDITY = 0.5
# Points of accuracy a concise candidate may lose when no CI is given, by accuracy metric: about twice GRPO's
# seed-to-seed sd of that metric on the search held-out set (the paper's Overall: sd about 1 on protocol 1;
# overall@2: 0.34 over 8 seeds, benchmarks/results/protocol2/error_rates.json). A metric not listed gets
# Overall's, which is loose for it. A run records the tolerance it starts with (settings.resolve).
ACCURACY_TOLERANCE = {"overall": 2.0, "overall@2": 0.7}
ACCURACY_TOLERANCE_BEFORE_RESIZE = 2.0  # every run stored before the tolerance was recorded used this one
PENALTY = 5.0  # scalar points lost per point of constraint violation
# The smallest change that counts as a discovery, in the objective's units (points of the run's accuracy
# metric; length in percent of the baseline's): the whole confirmation interval must clear it, not only zero.
# 0.25 points of overall@2 is a tenth of GRPO's gain over its start on `standard`; with 5 fresh seeds
# (settings.DiscoverConfig.reeval_seeds) it was chosen on measured error rates (docs/benchmarks.md §16,
# benchmarks/bench_error_rates.py): no null change of GRPO passed it after selection (0 of 168 replicates), a
# planted +1.2 passed on every 5 of 8 seeds, and the model fitted to the planted effects gives 0.89 power at a
# true +1 (the former +1 on 3 seeds: 0.03, and at c = 0 nulls passed in 1% of replicates). 5% of length
# is a sixth of the paper's -29% and more than twice the shortening a length term buys by accident (docs §6).
# (the verdict reads the accuracy metric for an accuracy objective, length for a concise one: those two only)
MIN_EFFECT = {"overall": 0.25, "length": 5.0}
# A run stored before the re-sizing recorded only the minimums it was given; the others read as that time's
# defaults, so a stored run's verdicts never move with a new default (a new run records all of them)
MIN_EFFECT_BEFORE_RESIZE = {"overall": 1.0, "length": 5.0}


def accuracy_tolerance(accuracy: str) -> float:
    """The concise constraint's default tolerance for the accuracy metric ``accuracy``."""
    return ACCURACY_TOLERANCE.get(accuracy, ACCURACY_TOLERANCE["overall"])


@dataclass(frozen=True)
class Term:
    name: str  # a metric key
    direction: int  # +1 maximise, -1 minimise
    weight: float  # weight in `scalar`; 0 means "Pareto only"

    def __post_init__(self):
        if self.name not in METRIC_KEYS:
            raise ValueError(f"unknown metric {self.name!r}; choose one of {METRIC_KEYS}")
        if self.direction not in (1, -1):
            raise ValueError(f"direction of {self.name!r} must be +1 or -1, got {self.direction!r}")
        if not self.weight >= 0:
            raise ValueError(f"weight of {self.name!r} must be >= 0 (use direction=-1 to minimise), got {self.weight!r}")

    def describe(self) -> str:
        verb = "max" if self.direction > 0 else "min"
        unit = ", % vs baseline" if self.name in RELATIVE_KEYS else ""
        w = "Pareto only" if self.weight == 0 else f"w={self.weight:g}{unit}"
        return f"{verb} {self.name} ({w})"


@dataclass(frozen=True)
class Constraint:
    name: str
    op: str  # ">=" or "<="
    value: float
    relative_to_baseline: bool = False
    tolerance: float = 0.0  # slack used when no CI half-width is given

    def __post_init__(self):
        if self.name not in METRIC_KEYS:
            raise ValueError(f"unknown metric {self.name!r} in a constraint; choose one of {METRIC_KEYS}")
        if self.op not in (">=", "<="):
            raise ValueError(f"constraint operator must be '>=' or '<=', got {self.op!r}")

    def violation(self, metrics: dict, baseline: dict | None, ci_halfwidth: float | None = None) -> float:
        """How far (in the metric's units, >= 0) `metrics` is on the wrong side of the loosened bound."""
        bound = self.value
        if self.relative_to_baseline:
            if baseline is None:
                raise ValueError(f"constraint on {self.name} is relative to the baseline: pass baseline metrics")
            bound += metric_value(baseline, self.name)
        slack = ci_halfwidth if ci_halfwidth is not None and math.isfinite(ci_halfwidth) else self.tolerance
        m = metric_value(metrics, self.name)
        if self.op == ">=":
            return max(0.0, bound - abs(slack) - m)
        return max(0.0, m - (bound + abs(slack)))

    def describe(self) -> str:
        if self.relative_to_baseline:
            rhs = "baseline" + (f" {self.value:+g}" if self.value else "")
        else:
            rhs = f"{self.value:g}"
        sign = "-" if self.op == ">=" else "+"
        slack = f" {sign} {self.tolerance:g}" if self.tolerance else ""
        return f"{self.name} {self.op} {rhs}{slack} (or {sign} the baseline's CI half-width)"


@dataclass(frozen=True)
class Objective:
    directive: str = ""
    metrics: tuple[Term, ...] = (Term("overall", 1, 1.0), Term("hard_pass1", 1, 0.0))
    # the accuracy metric the search ranks on and the verdict reads: the paper's Overall, or overall@k (the same
    # tiers and weights with the sampled tiers at pass@k, which separates algorithms with far fewer seeds on the
    # sandbox: docs/benchmarks.md §16). The paper's Overall is reported beside it either way.
    accuracy: str = "overall"
    constraints: tuple[Constraint, ...] = ()
    penalty: float = PENALTY
    understood: tuple[str, ...] = ()  # the directive words that mapped to something
    note: str = ""  # what was (not) understood, for the log and the CLI
    min_effect: tuple[tuple[str, float], ...] = tuple(MIN_EFFECT.items())  # see MIN_EFFECT

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        if not self.metrics:
            raise ValueError("an objective needs at least one metric term")
        if self.accuracy not in ACCURACY_KEYS:
            raise ValueError(f"the search ranks on one of {', '.join(ACCURACY_KEYS)}, not {self.accuracy!r}")
        names = [t.name for t in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"each metric may appear once in an objective, got {names}")
        effect = dict(MIN_EFFECT, **dict(self.min_effect))
        for k, v in effect.items():
            if k not in MIN_EFFECT or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"minimum effect {k}={v!r}: give one of {', '.join(MIN_EFFECT)} and a number >= 0, "
                                 f"e.g. --min-effect overall=1 --min-effect length=5 (length in % of GRPO's)")
        object.__setattr__(self, "min_effect", tuple(sorted(effect.items())))

    @property
    def verdict_metric(self) -> str:
        """What a confirmation verdict reads: length for an objective that weighs it, else the accuracy metric."""
        return "length" if self.weights().get("length", 0) > 0 else self.accuracy

    def effect(self, name: str) -> float:
        """The smallest change of ``name`` that counts as a discovery (points; length: % of the baseline). The
        accuracy metric's is stored as "overall", whichever overall@k the run ranks on."""
        return dict(self.min_effect)["overall" if name in ACCURACY_KEYS else name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.metrics)

    def weights(self) -> dict[str, float]:
        """{metric: weight in `scalar`} (>= 0; the direction is in `metrics`). 0 means Pareto only."""
        return {t.name: t.weight for t in self.metrics}

    def vector(self, metrics: dict) -> tuple[float, ...]:
        """The objective vector, every component oriented so that larger is better (for Pareto)."""
        return tuple(t.direction * metric_value(metrics, t.name) for t in self.metrics)

    def violations(self, metrics: dict, baseline: dict | None = None,
                   ci_halfwidth: float | dict[str, float] | None = None) -> list[tuple[Constraint, float]]:
        """The violated constraints and by how much. `ci_halfwidth`: one half-width for every constraint,
        or one per metric name (see the module docstring for how it loosens a bound)."""
        out = []
        for c in self.constraints:
            h = ci_halfwidth.get(c.name) if isinstance(ci_halfwidth, dict) else ci_halfwidth
            v = c.violation(metrics, baseline, h)
            if v > 0:
                out.append((c, v))
        return out

    def feasible(self, metrics: dict, baseline: dict | None = None,
                 ci_halfwidth: float | dict[str, float] | None = None) -> bool:
        return not self.violations(metrics, baseline, ci_halfwidth)

    def scalar(self, metrics: dict, baseline_metrics: dict | None = None) -> float:
        """The weighted score (larger is better) used for U_perf and to rank discoveries."""
        s = 0.0
        for t in self.metrics:
            if t.weight == 0:
                continue
            v = metric_value(metrics, t.name)
            if t.name in RELATIVE_KEYS:
                if baseline_metrics is None:
                    raise ValueError(f"the objective weighs {t.name} against the baseline: pass baseline metrics")
                b = metric_value(baseline_metrics, t.name)
                if not b > 0:
                    raise ValueError(f"baseline {t.name} must be > 0 to normalise by it, got {b}")
                v = 100.0 * (v / b - 1.0)
            s += t.weight * t.direction * v
        return s - self.penalty * sum(v for _, v in self.violations(metrics, baseline_metrics))

    def describe(self) -> str:
        """One line for the CLI and for the proposer's prompt."""
        s = "objective: " + ", ".join(t.describe() for t in self.metrics)
        if self.constraints:
            s += "; subject to " + " and ".join(c.describe() for c in self.constraints)
        s += f'; directive: "{self.directive}"' if self.directive else "; no directive (default: accuracy)"
        if self.accuracy != "overall":
            s += f"; accuracy is ranked on {self.accuracy} (the paper's Overall with its sampled tiers at pass@" \
                 f"{self.accuracy.split('@')[1]}), the paper's Overall reported beside it"
        return s

    def to_dict(self) -> dict:
        return {
            "directive": self.directive,
            "metrics": [{"name": t.name, "direction": t.direction, "weight": t.weight} for t in self.metrics],
            "constraints": [{"name": c.name, "op": c.op, "value": c.value, "relative_to_baseline": c.relative_to_baseline,
                             "tolerance": c.tolerance} for c in self.constraints],
            "penalty": self.penalty, "understood": list(self.understood), "note": self.note,
            "min_effect": dict(self.min_effect), "accuracy": self.accuracy,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Objective:
        return cls(directive=d.get("directive", ""), metrics=tuple(Term(**t) for t in d["metrics"]),
                   constraints=tuple(Constraint(**c) for c in d.get("constraints", ())),
                   penalty=d.get("penalty", PENALTY), understood=tuple(d.get("understood", ())), note=d.get("note", ""),
                   min_effect=tuple(d.get("min_effect", MIN_EFFECT).items()), accuracy=d.get("accuracy", "overall"))


# (rule name, regex of whole words / stems). Order is the order terms appear in the objective.
_RULES: tuple[tuple[str, str], ...] = (
    ("accuracy", r"accura\w*|correct\w*|overall|performance|scores?"),
    ("hard", r"hard\w*|sparse\w*|difficult\w*|aime\w*"),
    ("concise", r"concise\w*|short(?:er|est|en\w*)?|brief\w*|efficien\w*|length\w*|terse\w*|compress\w*"
                r"|(?:fewer|less)\s+tokens"),
    ("valid", r"valid\w*|invalid\w*|format\w*|well[- ]formed|pars(?:e|es|ed|ing|able)"),
    ("stable", r"stab(?:le|ility|ilit\w*|ilis\w*|iliz\w*)|robust\w*|collapse\w*"),
)
_PATTERNS = {name: re.compile(rf"\b(?:{rx})\b", re.IGNORECASE) for name, rx in _RULES}


def parse_directive(text: str | None, accuracy: str = "overall", tolerance: float | None = None) -> Objective:
    """Map a directive to an `Objective` with the keyword table of the module docstring. None gives the
    default accuracy objective; the text is kept verbatim for the prompts whatever it says. ``accuracy`` is the
    metric that stands for accuracy wherever the table says overall (see `Objective.accuracy`); ``tolerance``
    replaces its `accuracy_tolerance` in the concise constraint."""
    if text is None:
        return Objective(metrics=(Term(accuracy, 1, 1.0), Term("hard_pass1", 1, 0.0)), accuracy=accuracy)
    directive = text.strip()
    if not directive:
        raise ValueError("the directive is empty: omit it for the default accuracy objective, or say what you "
                         "want, e.g. 'accurate and concise'")
    hits = {name: [m.group(0).lower() for m in p.finditer(directive)] for name, p in _PATTERNS.items()}
    understood = tuple(w for name, _ in _RULES for w in dict.fromkeys(hits[name]))
    terms = [Term(accuracy, 1, 1.0)]
    constraints: list[Constraint] = []
    if hits["hard"]:
        terms.append(Term("hard_pass1", 1, W_HARD))
    if hits["concise"]:
        terms.append(Term("length", -1, W_LENGTH))
        constraints.append(Constraint(accuracy, ">=", 0.0, relative_to_baseline=True,
                                      tolerance=accuracy_tolerance(accuracy) if tolerance is None else tolerance))
    if hits["valid"]:
        terms.append(Term("validity", 1, W_VALIDITY))
    if len(terms) == 1:  # pure accuracy: keep the hard tiers on the Pareto front, as the default does
        terms.append(Term("hard_pass1", 1, 0.0))

    notes = []
    if not understood:
        notes.append(f"no known objective word in {directive!r}; using the default accuracy objective "
                     f"(known: accurate, hard, concise/short/length, valid/format, stable)")
    else:
        notes.append("understood: " + ", ".join(f"{w!r}" for w in understood))
    if hits["stable"]:
        notes.append("stability across seeds is not measured yet, so 'stable' only reaches the prompts")
    note = "; ".join(notes)
    log.info("directive %r: %s", directive, note)
    return Objective(directive=directive, metrics=tuple(terms), constraints=tuple(constraints),
                     understood=understood, note=note, accuracy=accuracy)


def run_objective(config: dict) -> Objective:
    """The objective of a discovery run from its stored settings: the directive, the accuracy tolerance of its
    concise constraint (a run stored before it was recorded: ACCURACY_TOLERANCE_BEFORE_RESIZE), and the minimum
    effect sizes it records (`settings.resolve` records all of them when a run starts; one missing from a run stored
    before that reads as the default of its time, MIN_EFFECT_BEFORE_RESIZE)."""
    tol = config.get("accuracy_tolerance")
    obj = parse_directive(config.get("directive") or None, config.get("rank_on") or "overall",
                          ACCURACY_TOLERANCE_BEFORE_RESIZE if tol is None else tol)
    return dataclasses.replace(obj, min_effect=tuple(stored_min_effect(config.get("min_effect")).items()))


def stored_min_effect(recorded: dict | None) -> dict[str, float]:
    """The minimum effects a stored run is judged by: those it recorded, and for a run stored before they were
    recorded in full, the defaults of its time for the rest."""
    return {**MIN_EFFECT_BEFORE_RESIZE, **(recorded or {})}
