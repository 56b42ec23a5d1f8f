"""What the hook process costs and changes: wall time side by side, parity, round trips, memory.

1. A `standard` evaluation of the built-in GRPO with its hooks called in the worker itself (what poise
   did before the hook process) and of a copy of GRPO's file through its jailed hook process, in the
   order A B B A in one run (so drift of the machine falls on both), same seed, same threads. The two
   must give bit-identical curves and metrics; the wall time of B must be within 5% of A's.
2. The round trip of one hook call, in microseconds: compute_advantages on a training step's batch
   (128 x 96), and compute_policy_loss on a mini-batch (32 x 96), each timed over many calls.
3. The memory of the jail: resident memory of the processes it is made of (two bubblewrap processes
   and the Python that holds the candidate) after the candidate is loaded and has been called.

    python benchmarks/bench_hook.py            # writes benchmarks/results/hook.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from poise.algorithms import builtin_source
from poise.algorithms.probe import make_probe_batch
from poise.backends.tiny import sft_policy
from poise.backends.worker import AlgorithmSpec, run_evaluation
from poise.evaluation.fidelity import get_fidelity
from poise.isolation.hook import HookProcess, _children

STRIP = ("sample_s", "step_s")
LOSS = builtin_source("grpo") + '''
from poise.algorithms.base import ppo_clip_loss


def compute_policy_loss(logp, batch, advantages, cfg):
    return ppo_clip_loss(logp, batch.old_logp, advantages, batch.mask, cfg.clip_low, cfg.clip_high, cfg.loss_agg)
'''


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def side_by_side(fidelity: str, seed: int, threads: int) -> dict:
    sft_policy(get_fidelity(fidelity))  # trained or loaded once, not counted
    specs = {"in-process": AlgorithmSpec("grpo", in_process=True),
             "hook": AlgorithmSpec("copy_of_grpo", builtin_source("grpo"), "copy_of_grpo.py")}
    runs: dict[str, list] = {"in-process": [], "hook": []}
    for label in ("in-process", "hook", "hook", "in-process"):
        t0 = time.time()
        res = run_evaluation(specs[label], fidelity, seed, threads)
        wall = time.time() - t0
        assert not hasattr(res, "kind"), res
        runs[label].append((wall, res))
        print(f"{label:>10}: {wall:6.1f} s  Overall {res.metrics['overall']:.2f}", flush=True)
    a, b = runs["in-process"][0][1], runs["hook"][0][1]
    strip = lambda r: [{k: v for k, v in row.items() if k not in STRIP} for row in r.trajectory]
    same = all(strip(r) == strip(a) and r.metrics == a.metrics for _, r in runs["in-process"] + runs["hook"])
    wall = {k: statistics.mean(w for w, _ in v) for k, v in runs.items()}
    return {"fidelity": fidelity, "seed": seed, "threads": threads, "order": "A B B A",
            "wall_s": {k: [round(w, 2) for w, _ in v] for k, v in runs.items()},
            "mean_wall_s": {k: round(v, 2) for k, v in wall.items()},
            "overhead_pct": round(100 * (wall["hook"] / wall["in-process"] - 1), 2),
            "bit_identical": same, "overall": a.metrics["overall"],
            "hook_calls": b.info["hook_calls"], "hook_s": round(b.info["hook_s"], 3),
            "isolation": b.info["isolation"]}


def round_trips(calls: int) -> dict:
    out = {}
    with HookProcess(LOSS, "loss", "loss.py", jailed=True) as hook:
        algo = hook.algorithm()
        step = make_probe_batch(num_prompts=16, group_size=8, max_len=96, min_len=60, seed=0)
        mb = step.select(torch.arange(32))
        adv = algo.compute_advantages(step, algo.config)[:32]
        logp = (mb.old_logp + 0.01).requires_grad_(True)
        for name, fn in (("compute_advantages 128x%d" % step.mask.shape[1], lambda: algo.compute_advantages(step, algo.config)),
                         ("compute_policy_loss 32x%d" % mb.mask.shape[1], lambda: algo.compute_policy_loss(logp, mb, adv, algo.config))):
            for _ in range(20):
                fn()
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out[name] = {"median_us": round(1e6 * statistics.median(ts), 1),
                         "p90_us": round(1e6 * sorted(ts)[int(0.9 * len(ts))], 1), "calls": calls}
        # the same math in this process, for scale
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.autograd.grad(*_local_loss(logp, mb, adv))
        out["local compute_policy_loss + grad (no process)"] = {
            "median_us": round(1e6 * (time.perf_counter() - t0) / calls, 1), "calls": calls}
        pids = [hook.proc.pid]
        for _ in range(2):
            pids += _children(pids[-1])
        out["jail_rss_mb"] = {"bwrap (outside)": round(rss_kb(pids[0]) / 1024, 1),
                              "bwrap (namespace init)": round(rss_kb(pids[1]) / 1024, 1),
                              "python holding the candidate": round(rss_kb(pids[2]) / 1024, 1)}
        out["jail_rss_mb"]["total"] = round(sum(out["jail_rss_mb"].values()), 1)
        out["layers"] = hook.layers
    t0 = time.perf_counter()
    with HookProcess(LOSS, "loss", "loss.py", jailed=True):
        pass
    out["start_and_load_s"] = round(time.perf_counter() - t0, 2)
    return out


def _local_loss(logp, mb, adv):
    from poise.algorithms.base import ppo_clip_loss
    loss, _ = ppo_clip_loss(logp, mb.old_logp, adv, mb.mask)
    return loss, logp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/hook.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"round_trips": round_trips(args.calls)}
    print(json.dumps(result, indent=1), flush=True)
    result["side_by_side"] = side_by_side(args.fidelity, args.seed, args.threads)
    print(json.dumps(result["side_by_side"], indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
