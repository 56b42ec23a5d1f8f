"""The GPU check's measurements (benchmarks/gpu_check.sh runs it): the tiny backend on CUDA, and the TRL
backend on a randomly initialised Llama of about 0.5B parameters. Each part is timed and written out as
soon as it ends, so a part that fails or runs out of time leaves the others' numbers.

    python benchmarks/gpu_check.py --out gpu_check.json [--trl-steps 5] [--skip-tiny]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--trl-steps", type=int, default=5)
    ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args()
    import torch

    results: dict = {"cuda": torch.cuda.is_available(), "torch": torch.__version__,
                     "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    parts = ([] if args.skip_tiny else [("tiny_cuda", lambda: tiny_on_cuda(results))]) + [
        ("trl_random_0.5b", lambda: trl_random(results, args.trl_steps))]
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
