"""The TRL backend on a real pretrained model on the CPU: SmolLM2-135M-Instruct (the offline default) trained
with GRPO on tiny-math prompts. Records the per-step curves, seconds per step, and the held-out numbers
of the start and of the trained model on the same benchmarks, so whether the reward moves is measured,
not assumed.

    python benchmarks/bench_trl.py --steps 30 --threads 2
Results: benchmarks/results/trl_smollm2.{json,md} and trl_smollm2_curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
PLOT_KEYS = ("accuracy", "validity", "response_length", "all_fail_groups", "entropy", "kl", "grad_norm", "step_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--limit", type=int, default=32, help="problems per benchmark")
    ap.add_argument("--k", type=int, default=8, help="samples per problem on the pass@k benchmarks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from poise.algorithms import load_algorithm
    from poise.backends import BackendSpec, get_backend
    from poise.report.plots import plot_curves

    torch.set_num_threads(args.threads)
    bench = {"aime24": ("pass@k", 0.2), "aime25": ("pass@k", 0.2), "amc": ("pass@k", 0.15),
             "math500": ("greedy", 0.15), "minerva": ("greedy", 0.15), "olympiad": ("greedy", 0.15)}
    config = {"trainer": {"steps": args.steps, "prompts_per_step": args.prompts, "group_size": args.group,
                          "lr": args.lr},
              "generation": {"max_new_tokens": args.max_new_tokens},
              "benchmarks": {n: {"source": f"tiny-math:{n}", "metric": m, "k": args.k, "weight": w,
                                 "limit": args.limit} for n, (m, w) in bench.items()}}
    backend = get_backend(BackendSpec("trl", "trl", config))
    t0 = time.time()
    backend.prepare(log=print)
    prepare_s = time.time() - t0
    start = backend.evaluate_start(args.seed)
    print(f"start: Overall {start.metrics['overall']:.1f} ({start.wall_s:.0f} s)", flush=True)

    def show(i, row):
        print(f"step {i}: reward {row['reward']:.3f} valid {row['validity']:.2f} len {row['response_length']:.0f} "
              f"all-fail {row['all_fail_groups']:.2f} {row['step_s']:.1f} s", flush=True)

    res = backend.evaluate(load_algorithm("grpo"), args.seed, on_step=show)
    curves = res.trajectory
    half = max(1, len(curves) // 3)
    first = sum(r["accuracy"] for r in curves[:half]) / half
    last = sum(r["accuracy"] for r in curves[-half:]) / half
    out = {"args": vars(args), "prepare_s": prepare_s, "start": start.to_dict(), "trained": res.to_dict(),
           "step_s_mean": sum(r["step_s"] for r in curves) / len(curves),
           "reward_first_third": first, "reward_last_third": last}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trl_smollm2.json").write_text(json.dumps(out, indent=1))
    lines = ["| | Overall | " + " | ".join(bench) + " | length | validity |", "|---|---|" + "---|" * len(bench) + "---|---|"]
    for label, m in (("start", start.metrics), ("GRPO", res.metrics)):
        lines.append(f"| {label} | {m['overall']:.1f} | " + " | ".join(f"{m['tiers'][n]['score']:.1f}" for n in bench)
                     + f" | {m['length']:.1f} | {m['validity']:.1f} |")
    lines.append(f"\n{len(curves)} steps, {out['step_s_mean']:.1f} s a step; training reward (accuracy) "
                 f"{first:.3f} over the first third of the steps, {last:.3f} over the last")
    (RESULTS / "trl_smollm2.md").write_text("\n".join(lines) + "\n")
    plot_curves({"GRPO": [curves]}, RESULTS / "trl_smollm2_curves.png", keys=PLOT_KEYS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
