"""Speed and memory of one evaluation: `smoke` and `standard`, one algorithm, one seed, 2 CPU threads.

The SFT warm start is trained (and cached) first and not counted: it is paid once per fidelity, not per
candidate. Each evaluation runs in a child process, as in `poise train`; the peak resident memory
reported is the child's.

    python benchmarks/bench_speed.py --algorithm grpo --fidelities smoke,standard
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from poise.backends.tiny import sft_policy
from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation
from poise.evaluation.fidelity import get_fidelity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithm", default="grpo")
    ap.add_argument("--fidelities", default="smoke,standard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = []
    for name in args.fidelities.split(","):
        fid = get_fidelity(name)
        t0 = time.time()
        sft_policy(fid)
        sft_s = time.time() - t0
        t0 = time.time()
        res = run_evaluation(AlgorithmSpec(args.algorithm), name, args.seed, args.threads)
        wall = time.time() - t0
        if isinstance(res, EvalFailure):
            raise SystemExit(res.message)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows.append({"fidelity": name, "algorithm": args.algorithm, "seed": args.seed, "wall_s": round(wall, 1),
                     "train_s": round(res.info["train_s"], 1), "eval_s": round(res.info["eval_s"], 1),
                     "rl_steps": fid.rl.steps, "child_peak_rss_mb": round(peak_mb), "sft_s_if_uncached": round(sft_s, 1),
                     "overall": round(res.metrics["overall"], 2)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
