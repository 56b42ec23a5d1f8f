"""The metrics schema, in one place: the keys every backend's results carry, what the objective reads
from them, the per-step curves, and the check an evaluation's metrics must pass before they enter the
archive.

Held-out metrics (one dict per evaluation, as a backend's scoring returns them):
    overall      the paper's weighted Overall of the tier scores, in [0, 100]
    length       mean response length, in tokens (>= 0)
    validity     % of responses with a well-formed final answer
    tiers        {tier: {"metric": "pass@k" | "greedy", "score", "pass@1", "pass@k", "length", ...}}
    weights      {tier: weight in Overall}
Objective metrics (`METRIC_KEYS`): overall, hard_pass1 (mean pass@1 over the sparse-reward tiers, computed
from the tiers), length, validity, and overall@k (`overall_at`: the paper's Overall with every sampled tier
scored at pass@k from the same samples, the greedy tiers as they are; what a search may rank on, since the
paper's pass@32 is mostly the evaluation's own sampling noise on the sandbox, docs/benchmarks.md §16).
Per-step curves (`TRAJECTORY_KEYS`, one row per RL step): what reflection, status and the report read.
"""

from __future__ import annotations

import math
from typing import Any

OVERALL_AT_K = (1, 2, 4, 8, 16)
ACCURACY_KEYS = ("overall", *(f"overall@{k}" for k in OVERALL_AT_K))  # what a search may rank accuracy on
# What `poise discover` ranks accuracy on when the sandbox trains the candidates, and what `poise train` reports
# beside the paper's Overall: chosen by measurement (docs/benchmarks.md §16, effect against noise per objective
# on matched seeds). Other backends rank on the paper's Overall unless told otherwise (--rank-on): nothing has
# measured them yet.
SANDBOX_RANK_ON = "overall@2"
METRIC_KEYS = ("overall", "hard_pass1", "length", "validity", *ACCURACY_KEYS[1:])
RELATIVE_KEYS = ("length",)  # measured against the baseline in `scalar`, so its weight is in percent
CURVE_KEYS = ("reward", "accuracy", "validity", "entropy", "response_length", "kl", "clip_frac", "grad_norm")
TRAJECTORY_KEYS = ("step", *CURVE_KEYS, "loss", "adv_abs_mean", "zero_std_groups", "all_fail_groups", "truncated",
                   "sampled_tokens", "sample_s", "step_s")
# and "pass@k": in [0, 100]
PERCENT_KEYS = ("overall", "validity", "score", "pass@1", "truncated", "no_answer", "share", "accuracy")


def hard_pass1(metrics: dict) -> float:
    """Mean pass@1 (temperature 1) over the sampled (pass@k) tiers of a held-out result: the sparse-reward
    signal itself, which moves even where pass@k is near its ceiling. Any backend's tiers."""
    def sampled(name: str, tier: dict) -> bool:
        if "metric" in tier:
            return tier["metric"] != "greedy"
        from poise.sandbox.task import HARD_TIERS  # a tier row without its metric: the sandbox's names say

        return name in HARD_TIERS

    hard = [t["pass@1"] for n, t in metrics["tiers"].items() if "pass@1" in t and sampled(n, t)]
    if not hard:
        raise KeyError("hard_pass1: these metrics have no pass@k tier")
    return sum(hard) / len(hard)


def overall_at(metrics: dict, k: int) -> float:
    """The paper's Overall of a held-out result with each sampled tier scored at pass@k (the unbiased estimate
    from the same samples) instead of its own pass@n, and each greedy tier as it is. Raises KeyError when a
    sampled tier has fewer than k samples or the result carries no weights."""
    tiers, weights = metrics["tiers"], metrics.get("weights")
    if not weights:
        raise KeyError(f"overall@{k}: these metrics carry no tier weights")
    total = 0.0
    for name, w in weights.items():
        t = tiers[name]
        if t.get("metric", "greedy") == "greedy":
            total += w * t["score"]
        elif f"pass@{k}" in t:
            total += w * t[f"pass@{k}"]
        else:
            raise KeyError(f"overall@{k}: tier {name} has no pass@{k} ({t.get('samples', '?')} samples a problem)")
    return total / sum(weights.values())


def metric_value(metrics: dict, key: str) -> float:
    """One metric key from either a flat dict of means ({"overall": .., "hard_pass1": ..}) or a full
    `evaluate_policy` result (hard_pass1 and overall@k are then computed from the tiers)."""
    if key in metrics:
        return float(metrics[key])
    if key == "hard_pass1" and "tiers" in metrics:
        return float(hard_pass1(metrics))
    if key.startswith("overall@") and key in METRIC_KEYS and "tiers" in metrics:
        return overall_at(metrics, int(key.split("@")[1]))
    raise KeyError(f"metric {key!r} is missing (have {sorted(metrics)}); the known keys are {METRIC_KEYS}")


def check_metrics(metrics: Any) -> str | None:
    """What is wrong with an evaluation's metrics, or None when they are usable: every number finite,
    "overall" present, percentages (overall, validity, tier score / pass@1 / pass@k / validity) in
    [0, 100], lengths >= 0. The loop calls it before `add_evaluation` and marks a bad candidate failed."""
    if not isinstance(metrics, dict):
        return f"metrics must be a dict, got {type(metrics).__name__}"
    ov = metrics.get("overall")
    if isinstance(ov, bool) or not isinstance(ov, (int, float)):
        return f"metrics need a numeric 'overall' (got {ov!r}; keys: {sorted(metrics)})"

    def walk(obj, path: str) -> str | None:
        if isinstance(obj, dict):  # plain numbers first, so the top-level problem is the one named
            for k, v in sorted(obj.items(), key=lambda kv: isinstance(kv[1], (dict, list, tuple))):
                p = walk(v, f"{path}.{k}" if path else str(k))
                if p:
                    return p
            return None
        if isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                p = walk(v, f"{path}[{i}]")
                if p:
                    return p
            return None
        if isinstance(obj, bool) or not isinstance(obj, (int, float)):
            return None  # labels such as "metric": "pass@32"
        if not math.isfinite(obj):
            return f"{path} is {obj} (not finite)"
        key = path.rsplit(".", 1)[-1]
        if path.startswith("weights"):
            return None
        if (key in PERCENT_KEYS or key.startswith("pass@")) and not 0 <= obj <= 100:
            return f"{path} = {obj} is outside [0, 100]"
        if key == "length" and obj < 0:
            return f"{path} = {obj} is negative"
        return None

    return walk(metrics, "")
