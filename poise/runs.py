"""Run folders: where `poise train` writes curves, metrics and the summary, as each seed finishes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from poise import __version__
from poise.backends.base import EvalResult
from poise.evaluation.keys import SANDBOX_RANK_ON, hard_pass1, metric_value
from poise.evaluation.metrics import mean_ci, seed_diff_ci


def write_json(path: Path, obj) -> None:
    """Atomic write: a crash never leaves a half-written file behind."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def new_run_dir(root: Path, label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = root / f"{stamp}-{label}"
    n = 1
    while d.exists():
        n += 1
        d = root / f"{stamp}-{label}-{n}"
    d.mkdir(parents=True)
    return d


def run_manifest(algorithm: str, origin: str, source: str, fidelity: dict, seeds: list[int],
                 backend: dict | None = None) -> dict:
    return {
        "algorithm": algorithm, "origin": origin, "code_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "fidelity": fidelity, "seeds": seeds, "poise": __version__, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "started": time.time(),
        "backend": backend or {"name": "tiny"},
    }


def save_seed(run: Path, res: EvalResult) -> None:
    write_json(run / f"seed_{res.seed}.json", res.to_dict())
    if res.trajectory:
        keys = list(res.trajectory[0])
        with open(run / f"curves_seed_{res.seed}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(res.trajectory)


def summarize(results: list[EvalResult]) -> dict:
    """Mean and 95% CI over seeds of each tier score, Overall, length and validity."""
    out: dict = {"seeds": [r.seed for r in results], "tiers": {}}
    for t in results[0].metrics["tiers"]:  # the backend's benchmarks, in its order
        out["tiers"][t] = mean_ci([r.metrics["tiers"][t]["score"] for r in results]).to_dict()
        out["tiers"][t]["pass@1"] = mean_ci([r.metrics["tiers"][t]["pass@1"] for r in results]).to_dict()
    for k in ("overall", "length", "validity"):
        out[k] = mean_ci([r.metrics[k] for r in results]).to_dict()
    out["hard_pass@1"] = mean_ci([hard_pass1(r.metrics) for r in results]).to_dict()
    ranked = [v for r in results if (v := _ranked(r)) is not None]
    if len(ranked) == len(results):
        out[SANDBOX_RANK_ON] = mean_ci(ranked).to_dict()
    out["per_seed_overall"] = [r.metrics["overall"] for r in results]
    return out


def _ranked(r: EvalResult) -> float | None:
    """What a discovery run on the sandbox ranks accuracy on (keys.SANDBOX_RANK_ON), where the tiers allow it."""
    try:
        return metric_value(r.metrics, SANDBOX_RANK_ON)
    except KeyError:
        return None


def _row_values(r: EvalResult) -> dict[str, float]:
    vals = {t: m["score"] for t, m in r.metrics["tiers"].items()}
    vals.update({k: r.metrics[k] for k in ("overall", "length", "validity")})
    vals["hard_pass@1"] = hard_pass1(r.metrics)
    if (v := _ranked(r)) is not None:
        vals[SANDBOX_RANK_ON] = v
    return vals


def versus(results: list[EvalResult], baseline: list[EvalResult]) -> dict:
    """95% interval of (mean over ``results``) - (mean over ``baseline``) for each tier score, Overall, hard
    pass@1, length and validity: the comparison a reader of two per-arm intervals needs, since two
    overlapping intervals do not mean the difference is zero. Paired when both have the same seeds (at one
    seed both were scored with the same noise), Welch otherwise; each interval's ``method`` says which."""
    a = {r.seed: _row_values(r) for r in results}
    b = {r.seed: _row_values(r) for r in baseline}
    keys = [k for k in next(iter(a.values())) if all(k in x for x in [*a.values(), *b.values()])]
    return {k: seed_diff_ci({s: x[k] for s, x in a.items()}, {s: x[k] for s, x in b.items()}).to_dict() for k in keys}


def write_metrics_csv(path: Path, rows: list[tuple[str, EvalResult]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algorithm", "seed", "tier", "metric", "score", "pass@1", "validity", "length"])
        for name, r in rows:
            for t, m in r.metrics["tiers"].items():
                w.writerow([name, r.seed, t, m["metric"], f"{m['score']:.4f}", f"{m['pass@1']:.4f}",
                            f"{m['validity']:.4f}", f"{m['length']:.3f}"])
            w.writerow([name, r.seed, "overall", "weighted", f"{r.metrics['overall']:.4f}", "", "", ""])
