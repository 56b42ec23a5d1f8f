"""Trainer throughput: poise's RL trainer against Hugging Face TRL's GRPOTrainer, in one run.

Both train the same size of randomly initialised decoder (layers, heads, width) on the same prompts,
with the same group size and the same number of sampled tokens per step (the end token is forbidden on
both sides, so every completion is exactly --max-new tokens). One step = sample prompts_per_step x
group_size completions, score them, update. TRL is configured for one optimizer update per generation
(its default); poise is measured both that way ("matched") and with its default of 4 mini-batch updates
per generation, which also pays a reference-model forward for the KL curve.

It also reports the FLOP/s the poise trainer reaches (matmul FLOPs counted by
torch.utils.flop_counter over one step, divided by the measured step time) against this machine's
measured matrix-multiply ceiling at the model's own shapes.

    pip install -e ".[trl]"
    python benchmarks/bench_throughput.py --n-layer 3 --n-embd 128 --prompts-per-step 16 --max-new 64
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import time
from pathlib import Path

import torch

from poise.algorithms import load_algorithm
from poise.sandbox.model import ModelConfig, TinyGPT
from poise.sandbox.task import CHARS, TIERS, training_problems
from poise.sandbox.trainer import RLConfig, train_rl


def matmul_ceiling(n_embd: int, rows: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best GFLOP/s of [rows, d] @ [d, 4d] (the MLP's shape, the largest matmul in the model)."""
    a = torch.randn(rows, n_embd, dtype=dtype)
    b = torch.randn(n_embd, 4 * n_embd, dtype=dtype)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * rows * n_embd * 4 * n_embd * n / (time.perf_counter() - t0) / 1e9


def run_poise(problems, args, minibatches: int, precision: str) -> dict:
    torch.manual_seed(args.seed)
    cfg = ModelConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=48 + args.max_new)
    ref = TinyGPT(cfg).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy = copy.deepcopy(ref)
    for p in policy.parameters():
        p.requires_grad_(True)
    rl = RLConfig(steps=args.warmup + args.steps, prompts_per_step=args.prompts_per_step, group_size=args.group_size,
                  max_new_tokens=args.max_new, num_minibatches=minibatches, lr=1e-4, precision=precision,
                  ignore_eos=True)
    rows = []
    t_end = []
    train_rl(load_algorithm("grpo"), policy, ref, rl, args.seed, set(),
             on_step=lambda i, row: (rows.append(row), t_end.append(time.perf_counter())), problems=problems)
    timed = rows[args.warmup:]
    wall = t_end[-1] - t_end[args.warmup - 1]
    tokens = sum(r["sampled_tokens"] for r in timed)

    # FLOPs of one more step, counted (not timed: the counter slows it down)
    from torch.utils.flop_counter import FlopCounterMode
    one = RLConfig(**{**rl.__dict__, "steps": 1})
    with FlopCounterMode(display=False) as fc:
        train_rl(load_algorithm("grpo"), policy, ref, one, args.seed + 1, set(), problems=problems)
    flops = fc.get_total_flops()
    return {"steps_per_s": len(timed) / wall, "sampled_tokens_per_s": tokens / wall,
            "mean_completion_tokens": tokens / (len(timed) * args.prompts_per_step * args.group_size),
            "wall_s": wall, "timed_steps": len(timed), "n_params": policy.num_params(),
            "matmul_flops_per_step": flops, "achieved_gflops": flops * len(timed) / wall / 1e9,
            "updates_per_step": minibatches, "precision": precision}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=3)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    n_prompts = args.prompts_per_step * (args.warmup + args.steps + 2)
    problems = training_problems(random.Random(args.seed), n_prompts, TIERS, set())
    result = {"config": vars(args), "machine": platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    result["poise_matched_fp32"] = run_poise(problems, args, 1, "fp32")
    result["poise_default_fp32"] = run_poise(problems, args, 4, "fp32")
    result["poise_matched_bf16"] = run_poise(problems, args, 1, "bf16")
    if not args.skip_trl:
        import sys
        sys.path.insert(0, str(Path(__file__).parent))
        from trl_baseline import run_trl_grpo
        result["trl"] = run_trl_grpo([p.prompt for p in problems], [str(p.answer) for p in problems], list(CHARS),
                                     n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                                     group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                                     max_new_tokens=args.max_new, steps=args.steps, warmup_steps=args.warmup,
                                     threads=args.threads, seed=args.seed, ignore_eos=True)
        for k in ("poise_matched_fp32", "poise_default_fp32", "poise_matched_bf16"):
            result[f"speedup_{k}_vs_trl"] = {
                "steps": result[k]["steps_per_s"] / result["trl"]["steps_per_s"],
                "tokens": result[k]["sampled_tokens_per_s"] / result["trl"]["sampled_tokens_per_s"]}
    rows = args.prompts_per_step * args.group_size * 40
    result["ceiling_gflops_fp32"] = matmul_ceiling(args.n_embd, rows, torch.float32)
    result["ceiling_gflops_bf16"] = matmul_ceiling(args.n_embd, rows, torch.bfloat16)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
