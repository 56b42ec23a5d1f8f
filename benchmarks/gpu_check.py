"""The GPU check's measurements (benchmarks/gpu_check.sh runs it): the tiny backend on CUDA, the TRL
backend on a randomly initialised Llama of about 0.5B parameters, and the verl backend on a small random
Llama with an exported candidate's plugin. Each part is timed and written out as soon as it ends, so a
part that fails or runs out of time leaves the others' numbers.

    python benchmarks/gpu_check.py --out gpu_check.json [--trl-steps 5] [--verl-steps 3] [--skip-tiny] [--only verl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RANDOM_05B = {"name": "random", "hidden": 1024, "layers": 28, "heads": 16, "intermediate": 4096,
              "dtype": "bfloat16"}


def tiny_on_cuda(results: dict) -> None:
    from poise.algorithms import load_algorithm
    from poise.backends.tiny import evaluate

    t0 = time.time()
    res = evaluate(load_algorithm("grpo"), "standard", 0, device="cuda")
    results["tiny_cuda"] = {"fidelity": "standard", "wall_s": time.time() - t0, "train_s": res.info["train_s"],
                            "eval_s": res.info["eval_s"], "overall": res.metrics["overall"]}


def trl_random(results: dict, steps: int) -> None:
    import torch

    from poise.algorithms import load_algorithm
    from poise.backends import BackendSpec, get_backend

    config = {"model": RANDOM_05B,
              "trainer": {"steps": steps, "prompts_per_step": 16, "group_size": 8, "micro_batches": 2},
              "generation": {"max_new_tokens": 256},
              "benchmarks": {"aime24": {"source": "tiny-math:aime24", "k": 8, "weight": 0.5, "limit": 16},
                             "math500": {"source": "tiny-math:math500", "metric": "greedy", "weight": 0.5,
                                         "limit": 64}}}
    backend = get_backend(BackendSpec("trl", "trl", config))
    backend.prepare()
    rows: list[dict] = []
    t0 = time.time()
    res = backend.evaluate(load_algorithm("grpo"), 0, on_step=lambda i, row: rows.append(row))
    train = res.info["train_s"]
    tokens = sum(r["sampled_tokens"] for r in rows)
    results["trl_random_0.5b"] = {
        "params": res.info["params"], "vllm": res.info["vllm"], "steps": len(rows), "train_s": train,
        "steps_per_s": len(rows) / train, "sampled_tokens_per_s": tokens / train,
        "step_s": [r["step_s"] for r in rows], "sample_s": [r["sample_s"] for r in rows], "eval_s": res.info["eval_s"],
        "wall_s": time.time() - t0, "peak_gb": torch.cuda.max_memory_allocated() / 2 ** 30}


# a candidate as `poise export --to verl` ships one: its own shaping, advantages and loss, all three through
# the plugin and the jailed hook process inside verl
VERL_CANDIDATE = """
import torch
from poise.algorithms.base import group_mean, group_std, to_tokens, aggregate
CONFIG = {"clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"}
def shape_rewards(batch, cfg):
    return batch.rewards - 0.1 * (~batch.valid).float()
def compute_advantages(batch, cfg):
    r = batch.rewards
    return to_tokens((r - group_mean(r, batch.group_ids)) / (group_std(r, batch.group_ids) + cfg.eps), batch.mask)
def compute_policy_loss(logp, batch, advantages, cfg):
    ratio = torch.exp(logp - batch.old_logp)
    loss = -torch.minimum(ratio * advantages, ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * advantages)
    return aggregate(loss, batch.mask, cfg.loss_agg, batch.max_len), {}
"""


def verl_random(results: dict, steps: int) -> None:
    """The verl backend end to end: a small random Llama saved as a Hugging Face folder, verl with vLLM
    rollouts on this GPU, the candidate's plugin, the final checkpoint scored."""
    import torch

    from poise.algorithms import algorithm_from_source
    from poise.backends import BackendSpec, get_backend
    from poise.backends.trl.config import ModelConfig
    from poise.backends.trl.model import load_model, load_tokenizer

    folder = Path("/tmp/poise-verl-model")
    mc = ModelConfig(name="random", hidden=256, layers=4, heads=4, intermediate=1024)
    tok = load_tokenizer(mc)
    load_model(mc, tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    config = {"model": {"name": str(folder)},
              "trainer": {"steps": steps, "prompts_per_step": 8, "group_size": 4, "lr": 1e-5},
              "generation": {"max_new_tokens": 64},
              "benchmarks": {"aime24": {"source": "tiny-math:aime24", "k": 4, "weight": 0.5, "limit": 8},
                             "math500": {"source": "tiny-math:math500", "metric": "greedy", "weight": 0.5, "limit": 16}},
              "verl": {"overrides": ["actor_rollout_ref.rollout.name=vllm",
                                     "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
                                     "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
                                     "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
                                     "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
                                     "data.max_prompt_length=128", "trainer.critic_warmup=0"]}}
    backend = get_backend(BackendSpec("verl", "verl", config))
    rows: list[dict] = []
    t0 = time.time()
    algo = algorithm_from_source(VERL_CANDIDATE, "verl-check", "gpu_check:verl")
    res = backend.evaluate(algo, 0, on_step=lambda i, row: rows.append(row))
    results["verl_random"] = {"steps": len(rows), "rows": rows, "metrics": res.metrics, "train_s": res.info["train_s"],
                              "eval_s": res.info["eval_s"], "wall_s": time.time() - t0,
                              "peak_gb": torch.cuda.max_memory_allocated() / 2 ** 30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--trl-steps", type=int, default=5)
    ap.add_argument("--verl-steps", type=int, default=3)
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--only", choices=["tiny", "trl", "verl"], help="run one part")
    args = ap.parse_args()
    import torch

    results: dict = {"cuda": torch.cuda.is_available(), "torch": torch.__version__,
                     "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    parts = ([] if args.skip_tiny else [("tiny_cuda", lambda: tiny_on_cuda(results))]) + [
        ("trl_random_0.5b", lambda: trl_random(results, args.trl_steps)),
        ("verl_random", lambda: verl_random(results, args.verl_steps))]
    if args.only:
        parts = [p for p in parts if p[0].startswith(args.only)]
    for name, part in parts:
        t0 = time.time()
        try:
            part()
        except Exception:  # noqa: BLE001 - one part's failure is a result too; the other parts still run
            results[name] = {"error": traceback.format_exc()[-3000:], "wall_s": time.time() - t0}
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(name, json.dumps(results[name])[:800], flush=True)


if __name__ == "__main__":
    main()
