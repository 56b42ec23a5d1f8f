"""Held-out confirmation: is a candidate better than the baseline on data that played no part in
selecting it?

The search compares candidates on one training seed and the search held-out set, which is what chose
them, so their search scores are optimistic. A candidate counts as a *discovery* only when, re-trained
on fresh seeds and scored on the disjoint confirmation set, it beats the baseline with a 95% confidence
interval on the difference: paired over the fresh seeds when both were trained on the same ones (as the loop
does: at one seed both share the training's and the evaluation's random numbers), Welch otherwise:

- an accuracy objective: its accuracy metric (the paper's Overall, or the overall@k the run ranks on) higher,
  the whole interval above the objective's minimum effect
  (0.25 points by default, with 5 fresh seeds: chosen on measured error rates, docs/benchmarks.md §16);
- an objective that weighs length ("concise"): length lower, the whole interval below minus the
  minimum effect (5% of the baseline's length by default), with mean Overall inside the baseline's
  own 95% interval or above it.

Clearing zero is not enough: with enough seeds any change clears it, however small.

Pure functions of the archive's numbers, so the loop, `poise status` and the report agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from poise.discovery.objective import METRIC_KEYS, Objective
from poise.evaluation.keys import hard_pass1, metric_value
from poise.evaluation.metrics import diff_ci, mean_ci, seed_diff_ci


@dataclass
class Discovery:
    entry_id: int
    name: str
    seeds: list[int]
    overall: dict  # mean, lo, hi, n, std over the fresh seeds, on the confirmation set
    length: dict
    hard_pass1: dict
    d_overall: dict  # difference vs the baseline, 95% CI (its "method": paired or Welch)
    d_length: dict
    verdict: str  # "discovery" | "not confirmed"
    reason: str
    needs: str = ""  # the minimum effect the interval had to clear, e.g. "Δ Overall > +1.0"
    accuracy: str = "overall"  # the accuracy metric the verdict read (the objective's)
    d_accuracy: dict | None = None  # its difference vs the baseline (= d_overall when it is the paper's Overall)


def shares_random_numbers(protocol: int, backend: str) -> bool:
    """Whether a run's arms share their random numbers at a seed, so that its comparisons on matched seeds are
    paired: the sandbox from evaluation protocol 2 on. The TRL and verl backends sample with their engines' own
    generators (no common random numbers yet), so their runs, and runs of protocol 1, keep the Welch intervals
    and raw means they reported."""
    return protocol >= 2 and backend == "tiny"


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The objective metrics (`METRIC_KEYS`) of one evaluation's held-out results, those it has."""
    out = {}
    for k in METRIC_KEYS:
        try:
            out[k] = metric_value(metrics, k)
        except KeyError:
            pass  # e.g. overall@16 of a tier scored from 4 samples a problem, or hard_pass1 without pass@k tiers
    return out


def paired_seed_metrics(per_seed: dict[int, dict], base: dict[int, dict]) -> dict[int, dict]:
    """An entry's per-seed metrics made comparable across seeds through the baseline trained on the same seeds:
    at seed s, m_s - b_s + mean(b). At one seed every arm shares the training's and the evaluation's random
    numbers (common random numbers), so the difference cancels the seed's own luck, and an entry raced on three
    seeds compares fairly with one trained on the first seed only. Unchanged when the baseline lacks any of the
    entry's seeds (Welch-style: the raw means), and the baseline's own metrics stay as they are."""
    if not per_seed or not set(per_seed) <= set(base):
        return per_seed
    keys = set.intersection(*(set(m) for m in [*per_seed.values(), *base.values()]))
    mean_b = {k: sum(b[k] for b in base.values()) / len(base) for k in keys}
    return {s: {k: m[k] - base[s][k] + mean_b[k] for k in keys} for s, m in per_seed.items()}


def search_per_seed(entry, fidelity: str | None = None) -> dict[int, dict]:
    """{seed: objective metrics} of an entry's search (or baseline) evaluations, at ``fidelity`` when given."""
    return {e.seed: flat_metrics(e.metrics) for e in entry.search_evaluations(fidelity)}


def seed_means(per_seed: dict[int, dict]) -> dict:
    """The mean over seeds of each objective metric that every seed has; {} without seeds."""
    if not per_seed:
        return {}
    keys = set.intersection(*(set(m) for m in per_seed.values()))
    return {k: sum(m[k] for m in per_seed.values()) / len(per_seed) for k in METRIC_KEYS if k in keys}


def search_means(entry, base: dict[int, dict] | None = None) -> dict:
    """Mean over an archive entry's search (or baseline) seeds of each objective metric; {} before any
    has finished. With ``base`` (the baseline's `search_per_seed`), paired through it (`paired_seed_metrics`)."""
    per_seed = search_per_seed(entry)
    return seed_means(per_seed if base is None else paired_seed_metrics(per_seed, base))


def confirm_fidelity(fidelity: str) -> str:
    """The fidelity label under which re-evaluations on the confirmation set are archived."""
    return fidelity + "/confirm"


def confirm_evaluations(entry, fidelity: str) -> list:
    """An entry's re-evaluations on the confirmation set (fresh seeds), oldest first."""
    fid = confirm_fidelity(fidelity)
    return [v for v in entry.evaluations if v.purpose == "reeval" and v.fidelity == fid]


def confirm_metrics(entry, fidelity: str) -> list[dict]:
    """An entry's held-out results from its re-evaluations on the confirmation set."""
    return [v.metrics for v in confirm_evaluations(entry, fidelity)]


def stats(ms: list[dict]) -> dict:
    return {"overall": mean_ci([m["overall"] for m in ms]).to_dict(),
            "length": mean_ci([m["length"] for m in ms]).to_dict(),
            "hard_pass1": mean_ci([hard_pass1(m) for m in ms]).to_dict(), "seeds": len(ms)}


def confirm(entry_id: int, name: str, ms: list[dict], base: list[dict], objective: Objective,
            seeds: list[int], base_seeds: list[int] | None = None) -> Discovery:
    """The verdict on one candidate's confirmation results `ms` (on `seeds`) against the baseline's `base` (on
    `base_seeds`): paired when the seeds match, Welch otherwise (or when `base_seeds` is not given). It reads
    the objective's accuracy metric (the paper's Overall or overall@k); the paper's Overall is reported beside."""
    pair = base_seeds if base_seeds is not None and len(base_seeds) == len(base) and len(seeds) == len(ms) else None

    def diff(key: str):
        a, b = [metric_value(m, key) for m in ms], [metric_value(m, key) for m in base]
        return diff_ci(a, b) if pair is None else seed_diff_ci(dict(zip(seeds, a)), dict(zip(pair, b)))

    acc = objective.accuracy
    what = "Overall" if acc == "overall" else acc
    d_ov, d_acc, d_ln = diff("overall"), diff(acc), diff("length")
    how = f"{d_acc.method} 95%, {len(ms)} and {len(base)} seeds"
    also = "" if acc == "overall" else f"; the paper's Overall {d_ov.mean:+.1f} [{d_ov.lo:+.1f}, {d_ov.hi:+.1f}]"
    tol = mean_ci([metric_value(m, acc) for m in base]).half_width
    if objective.verdict_metric == "length":
        pct = objective.effect("length")
        cut = pct / 100 * mean_ci([m["length"] for m in base]).mean  # the minimum effect, in tokens
        ok = d_ln.hi < -cut and d_acc.mean >= -tol
        needs = f"Δ length < -{cut:.1f} tokens ({pct:g}% of GRPO's), {what} within GRPO's ±{tol:.1f}"
        reason = (f"length {d_ln.mean:+.1f} [{d_ln.lo:+.1f}, {d_ln.hi:+.1f}] tokens and {what} {d_acc.mean:+.1f} "
                  f"[{d_acc.lo:+.1f}, {d_acc.hi:+.1f}] vs the baseline ({how}){also}; a discovery needs {needs}")
    else:
        cut = objective.effect(acc)
        ok = d_acc.lo > cut
        needs = f"Δ {what} > +{cut:g}"
        reason = (f"{what} {d_acc.mean:+.1f} [{d_acc.lo:+.1f}, {d_acc.hi:+.1f}] vs the baseline ({how}){also}; "
                  f"a discovery needs {needs}")
    return Discovery(entry_id, name, list(seeds), mean_ci([m["overall"] for m in ms]).to_dict(),
                     mean_ci([m["length"] for m in ms]).to_dict(), mean_ci([hard_pass1(m) for m in ms]).to_dict(),
                     d_ov.to_dict(), d_ln.to_dict(), "discovery" if ok else "not confirmed", reason, needs,
                     acc, d_acc.to_dict())
