"""Signal benchmark: can the sandbox separate algorithms?

Evaluates the SFT start, every built-in and two controls over the same seeds: sign-flipped GRPO (a
deliberately broken algorithm) and null GRPO (coin-flip rewards: what the optimiser's noise does alone), at one fidelity, then prints a markdown table (mean ± 95% CI over seeds) and the difference
of each algorithm from GRPO with a 95% interval (paired over the seeds both have when they have the same ones,
as every arm here does: at one seed they share their random numbers; Welch otherwise), the paper's Overall and
overall@2 (what a sandbox discovery ranks on), and plots the learning curves side by side.
Results are appended to a JSON file as each evaluation finishes, so an interrupted run resumes.

    python benchmarks/bench_signal.py --fidelity standard --seeds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from poise.algorithms import BUILTINS, builtin_source
from poise.backends.tiny import EvalResult, evaluate_start, sft_policy
from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation
from poise.evaluation.fidelity import get_fidelity
from poise.evaluation.keys import SANDBOX_RANK_ON, metric_value
from poise.evaluation.metrics import mean_ci, seed_diff_ci
from poise.report.plots import plot_curves
from poise.sandbox.benchmark import hard_pass1
from poise.sandbox.task import TIERS

HERE = Path(__file__).parent
CONTROLS = HERE / "algorithms"  # flipped_grpo.py, null_grpo.py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--algorithms", default=",".join(BUILTINS) + ",flipped_grpo,null_grpo")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per evaluation")
    ap.add_argument("--workers", type=int, default=2, help="evaluations run at once, each in its own process")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    fid = get_fidelity(args.fidelity)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / f"signal_{fid.name}.json"
    done: dict = json.loads(store.read_text()) if store.exists() else {}
    torch.set_num_threads(args.threads)
    sft_policy(fid, log=print)
    names = ["sft_start"] + args.algorithms.split(",")
    lock = threading.Lock()

    def one(name: str, seed: int) -> None:
        key = f"{name}/{seed}"
        t0 = time.time()
        if name == "sft_start":
            res = evaluate_start(fid, seed)
        else:
            path = CONTROLS / f"{name}.py"
            spec = AlgorithmSpec(name) if name in BUILTINS else AlgorithmSpec(name, path.read_text(), str(path))
            res = run_evaluation(spec, fid.name, seed, args.threads)
        if isinstance(res, EvalFailure):
            print(f"{key}: FAILED {res.message}", file=sys.stderr)
            return
        with lock:
            done[key] = res.to_dict()
            store.write_text(json.dumps(done, default=float))
        print(f"{key}: Overall {res.metrics['overall']:.1f}  wall {time.time() - t0:.0f}s", flush=True)

    # seed by seed, so a stopped run has every arm on the seeds it finished (paired comparisons need them)
    todo = [(n, s) for s in range(args.seeds) for n in names if f"{n}/{s}" not in done]
    with ThreadPoolExecutor(args.workers) as pool:  # each evaluation is its own process; threads just wait
        list(pool.map(lambda a: one(*a), todo))
    report(done, names, args.seeds, fid.name, out)


def _all_fail(rs: list[EvalResult]) -> str:
    """Share of training groups (%) in which no response was correct: where GRPO's signal is zero."""
    if not rs[0].trajectory:
        return ""
    first = mean_ci([100 * sum(x["all_fail_groups"] for x in r.trajectory[:10]) / 10 for r in rs])
    last = mean_ci([100 * sum(x["all_fail_groups"] for x in r.trajectory[-10:]) / 10 for r in rs])
    return f"{first.mean:.1f} / {last.mean:.1f}"


def report(done: dict, names: list[str], seeds: int, fidelity: str, out: Path) -> None:
    res = {n: [EvalResult(**done[f"{n}/{s}"]) for s in range(seeds) if f"{n}/{s}" in done] for n in names}
    cols = [t.name for t in TIERS]
    rk = SANDBOX_RANK_ON
    lines = ["| algorithm | seeds | " + " | ".join(cols) + f" | hard pass@1 | Overall | Δ Overall vs GRPO | {rk} | Δ {rk} vs GRPO "
             "| length | validity | all-fail groups, first / last 10 steps |",
             "|---" * (len(cols) + 10) + "|"]

    def by_seed(rs, key):
        return {r.seed: metric_value(r.metrics, key) for r in rs}

    def delta(rs, base, key):
        if not base or rs is base:
            return "—"
        d = seed_diff_ci(by_seed(rs, key), by_seed(base, key))
        return f"{d.mean:+.1f} [{d.lo:+.1f}, {d.hi:+.1f}] {d.method}"

    grpo = res.get("grpo", [])
    for n, rs in res.items():
        if not rs:
            continue
        cells = [str(mean_ci([r.metrics["tiers"][c]["score"] for r in rs])) for c in cols]
        ov = [r.metrics["overall"] for r in rs]
        lines.append(f"| {n} | {len(rs)} | " + " | ".join(cells) + f" | {mean_ci([hard_pass1(r.metrics) for r in rs])} | "
                     f"**{mean_ci(ov)}** | {delta(rs, grpo, 'overall')} | {mean_ci(list(by_seed(rs, rk).values()))} | "
                     f"{delta(rs, grpo, rk)} | {mean_ci([r.metrics['length'] for r in rs])} | "
                     f"{mean_ci([r.metrics['validity'] for r in rs])} | {_all_fail(rs)} |")
    table = "\n".join(lines)
    start = res.get("sft_start", [])
    extra = []
    if start and res.get("grpo"):
        for key in ("overall", rk, "hard_pass1"):
            d = seed_diff_ci(by_seed(res["grpo"], key), by_seed(start, key))
            extra.append(f"GRPO - SFT start, {key}: {d.mean:+.1f} [{d.lo:+.1f}, {d.hi:+.1f}] ({d.method} 95% CI)")
    text = table + "\n\n" + "\n".join(extra) + "\n"
    print(f"\n{fidelity}, mean ± 95% CI half-width over seeds\n\n{text}")
    (out / f"signal_{fidelity}.md").write_text(text)
    plot_curves({n: [r.trajectory for r in rs] for n, rs in res.items() if n != "sft_start"},
                out / f"signal_{fidelity}_curves.png")


if __name__ == "__main__":
    main()
