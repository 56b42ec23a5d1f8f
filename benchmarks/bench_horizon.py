"""Horizon: does the held-out difference between algorithms grow with RL steps?

Trains each algorithm for the longest horizon and scores the policy on the held-out suite at every checkpoint on
the way (the RL learning rate is constant and a step's prompts and noise depend on the seed and the step alone, so
the checkpoint at 50 steps is exactly a 50-step run). Our own code only (the built-ins and the benchmark controls),
trained in process, one thread per run, ``--workers`` runs at a time. Results are written as each checkpoint is
scored, so a stopped run resumes.

    python benchmarks/bench_horizon.py --algorithms grpo,null_grpo --seeds 2 --checkpoints 50,100,150

Results: benchmarks/results/protocol2/horizon.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).parent
OUT = HERE / "results" / "protocol2"


def run_one(args: tuple[str, int, list[int], str]) -> dict:
    name, seed, checkpoints, fidelity = args
    import torch

    torch.set_num_threads(1)
    from poise.algorithms import BUILTINS, algorithm_from_source, builtin_source
    from poise.backends.tiny import rl_start
    from poise.evaluation.fidelity import get_fidelity
    from poise.sandbox.benchmark import evaluate_policy
    from poise.sandbox.trainer import train_rl

    fid = get_fidelity(fidelity)
    if name in BUILTINS:
        algo = algorithm_from_source(builtin_source(name), name, f"builtin:{name}")
    else:
        path = HERE / "algorithms" / f"{name}.py"
        algo = algorithm_from_source(path.read_text(), name, str(path))
    policy, ref, exclude = rl_start(fid, device="cpu")
    out: dict = {}
    t0 = time.time()

    def on_step(step: int, row: dict) -> None:
        if step + 1 in checkpoints:
            out[str(step + 1)] = {"metrics": evaluate_policy(policy, fid.eval, seed), "wall_s": time.time() - t0}
            policy.train()  # evaluate_policy leaves the policy in eval mode; the trainer sets it again each step

    rl = dataclasses.replace(fid.rl, steps=max(checkpoints))
    trajectory = train_rl(algo, policy, ref, rl, seed, exclude, on_step)
    return {"name": name, "seed": seed, "checkpoints": out, "trajectory": trajectory}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithms", default="grpo,dapo,null_grpo")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--checkpoints", default="50,100,150")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fidelity", default="standard")
    args = ap.parse_args()
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "horizon.json"
    done: dict = json.loads(store.read_text()) if store.exists() else {}
    todo = [(n, s, checkpoints, args.fidelity) for s in range(args.seeds) for n in args.algorithms.split(",")
            if f"{n}/{s}" not in done]
    with get_context("spawn").Pool(args.workers) as pool:
        for res in pool.imap_unordered(run_one, todo):
            done[f"{res['name']}/{res['seed']}"] = res
            store.write_text(json.dumps(done, default=float))
            print(f"{res['name']}/{res['seed']}: " + ", ".join(
                f"{k} steps Overall {v['metrics']['overall']:.1f}" for k, v in res["checkpoints"].items()), flush=True)
    report(done, checkpoints)


def report(done: dict, checkpoints: list[int]) -> None:
    from poise.evaluation.keys import SANDBOX_RANK_ON, metric_value
    from poise.evaluation.metrics import mean_ci, seed_diff_ci

    names = sorted({k.rsplit("/", 1)[0] for k in done})
    lines = ["| algorithm | steps | seeds | Overall | " + SANDBOX_RANK_ON + f" | Δ {SANDBOX_RANK_ON} vs GRPO (paired) | "
             "length | entropy, last 10 steps before it |", "|---|---|---|---|---|---|---|---|"]
    for n in names:
        for c in checkpoints:
            rs = {int(k.rsplit("/", 1)[1]): v for k, v in done.items() if k.rsplit("/", 1)[0] == n
                  and str(c) in v["checkpoints"]}
            if not rs:
                continue
            ov = {s: r["checkpoints"][str(c)]["metrics"]["overall"] for s, r in rs.items()}
            rk = {s: metric_value(r["checkpoints"][str(c)]["metrics"], SANDBOX_RANK_ON) for s, r in rs.items()}
            g = {int(k.rsplit("/", 1)[1]): metric_value(v["checkpoints"][str(c)]["metrics"], SANDBOX_RANK_ON)
                 for k, v in done.items() if k.rsplit("/", 1)[0] == "grpo" and str(c) in v["checkpoints"]}
            d = seed_diff_ci(rk, {s: g[s] for s in rk if s in g}) if n != "grpo" and set(rk) <= set(g) else None
            ent = mean_ci([sum(x["entropy"] for x in r["trajectory"][c - 10:c]) / 10 for r in rs.values()])
            ln = mean_ci([r["checkpoints"][str(c)]["metrics"]["length"] for r in rs.values()])
            dtxt = "—" if d is None else f"{d.mean:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}] {d.method}"
            lines.append(f"| {n} | {c} | {len(rs)} | {mean_ci(list(ov.values()))} | {mean_ci(list(rk.values()))} | "
                         f"{dtxt} | {ln} | {ent.mean:.3f} |")
    md = "\n".join(lines) + "\n"
    (OUT / "horizon.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
