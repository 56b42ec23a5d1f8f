"""Held-out confirmation: is a candidate better than the baseline on data that played no part in
selecting it?

The search compares candidates on one training seed and the search held-out set, which is what chose
them, so their search scores are optimistic. A candidate counts as a *discovery* only when, re-trained
on fresh seeds and scored on the disjoint confirmation set, it beats the baseline with a 95% confidence
interval on the difference: paired over the fresh seeds when both were trained on the same ones (as the loop
does: at one seed both share the training's and the evaluation's random numbers), Welch otherwise:

- an accuracy objective: Overall higher, the whole interval above the objective's minimum effect
  (1 point by default);
- an objective that weighs length ("concise"): length lower, the whole interval below minus the
  minimum effect (5% of the baseline's length by default), with mean Overall inside the baseline's
  own 95% interval or above it.

Clearing zero is not enough: with enough seeds any change clears it, however small.

Pure functions of the archive's numbers, so the loop, `poise status` and the report agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from poise.discovery.objective import METRIC_KEYS, Objective
from poise.evaluation.keys import hard_pass1
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


def search_means(entry) -> dict:
    """Mean over an archive entry's search (or baseline) seeds of each objective metric; {} before any
    has finished."""
    if not entry.search_evaluations():
        return {}
    out = {}
    for k in METRIC_KEYS:
        try:
            out[k] = entry.mean_metric(k)
        except KeyError:
            pass  # e.g. overall@16 of a tier scored from 4 samples a problem
    return out


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
    `base_seeds`): paired when the seeds match, Welch otherwise (or when `base_seeds` is not given)."""
    ov, bl = [m["overall"] for m in ms], [m["overall"] for m in base]
    ln, bln = [m["length"] for m in ms], [m["length"] for m in base]
    if base_seeds is not None and len(base_seeds) == len(base) and len(seeds) == len(ms):
        d_ov = seed_diff_ci(dict(zip(seeds, ov)), dict(zip(base_seeds, bl)))
        d_ln = seed_diff_ci(dict(zip(seeds, ln)), dict(zip(base_seeds, bln)))
    else:
        d_ov, d_ln = diff_ci(ov, bl), diff_ci(ln, bln)
    how = f"{d_ov.method} 95%, {len(ms)} and {len(base)} seeds"
    tol = mean_ci(bl).half_width
    if objective.verdict_metric == "length":
        pct = objective.effect("length")
        cut = pct / 100 * mean_ci(bln).mean  # the minimum effect, in tokens of the baseline's length
        ok = d_ln.hi < -cut and d_ov.mean >= -tol
        needs = f"Δ length < -{cut:.1f} tokens ({pct:g}% of GRPO's), Overall within GRPO's ±{tol:.1f}"
        reason = (f"length {d_ln.mean:+.1f} [{d_ln.lo:+.1f}, {d_ln.hi:+.1f}] tokens and Overall {d_ov.mean:+.1f} "
                  f"[{d_ov.lo:+.1f}, {d_ov.hi:+.1f}] vs the baseline ({how}); a discovery needs {needs}")
    else:
        cut = objective.effect("overall")
        ok = d_ov.lo > cut
        needs = f"Δ Overall > +{cut:g}"
        reason = (f"Overall {d_ov.mean:+.1f} [{d_ov.lo:+.1f}, {d_ov.hi:+.1f}] vs the baseline ({how}); "
                  f"a discovery needs {needs}")
    return Discovery(entry_id, name, list(seeds), mean_ci(ov).to_dict(), mean_ci(ln).to_dict(),
                     mean_ci([hard_pass1(m) for m in ms]).to_dict(), d_ov.to_dict(), d_ln.to_dict(),
                     "discovery" if ok else "not confirmed", reason, needs)
