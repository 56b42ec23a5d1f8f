"""Held-out scoring of a model, the paper's protocol on the config's benchmarks: pass@k at temperature 1
with the unbiased estimator (k samples per problem), or greedy accuracy; mean length and validity; and
a weighted Overall. Returns the metrics schema of `poise.evaluation.keys`, the sandbox's."""

from __future__ import annotations

from typing import Any, Callable

import torch

from poise.backends.trl.config import TrlConfig
from poise.backends.trl.data import benchmark_set, render
from poise.backends.trl.grader import grade
from poise.evaluation.metrics import mean_pass_at_k


def _sample(model, tokenizer, prompts: list[str], n: int, greedy: bool, max_new_tokens: int, temperature: float,
            rows: int) -> list[tuple[str, bool, int]]:
    """(text, finished, tokens) of ``n`` responses to each prompt, prompt-major."""
    eos = _eos_ids(model, tokenizer)
    dev = next(model.parameters()).device
    out: list[tuple[str, bool, int]] = []
    per = max(1, rows // n)
    tokenizer.padding_side = "left"
    for i in range(0, len(prompts), per):
        chunk = [p for p in prompts[i:i + per] for _ in range(n)]
        # tokenized as TRL tokenizes a training prompt (special tokens as the tokenizer adds them)
        enc = tokenizer(chunk, return_tensors="pt", padding=True).to(dev)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=not greedy,
                                 temperature=None if greedy else temperature, top_p=None if greedy else 1.0,
                                 top_k=None if greedy else 0, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        new = gen[:, enc["input_ids"].shape[1]:].cpu()
        for r in range(new.shape[0]):
            toks = new[r].tolist()
            ends = [i for i, t in enumerate(toks) if t in eos]
            finished = bool(ends)
            n_tok = ends[0] + 1 if finished else len(toks)
            out.append((tokenizer.decode(toks[:n_tok], skip_special_tokens=True), finished, n_tok))
    return out


def _eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's end token and the model's (TRL stops on the same)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return [tokenizer.eos_token_id, *[i for i in ids if i != tokenizer.eos_token_id]]


def score(model, tokenizer, cfg: TrlConfig, seed: int, split: str = "search",
          log: Callable[[str], None] = lambda s: None, rows: int = 64) -> dict:
    """Every benchmark of ``cfg`` on ``split``, sampling seeded by ``seed``."""
    model.eval()
    torch.manual_seed(10_000 + seed)
    tiers = {}
    for name, b in cfg.benchmarks.items():
        problems = benchmark_set(b, cfg.data, split)
        greedy = b.metric == "greedy"
        n = 1 if greedy else b.k
        prompts = [render(p, cfg.data, tokenizer) for p in problems]
        res = _sample(model, tokenizer, prompts, n, greedy, cfg.generation.max_new_tokens,
                      cfg.generation.temperature, rows)
        graded = [grade(text, fin, problems[i // n].answer) for i, (text, fin, _) in enumerate(res)]
        counts = [(n, sum(graded[p * n + j][1] for j in range(n))) for p in range(len(problems))]
        row: dict[str, Any] = {
            "metric": "greedy" if greedy else f"pass@{n}",
            "pass@1": 100 * mean_pass_at_k(counts, 1),
            "validity": 100 * sum(v for v, _ in graded) / len(graded),
            "length": sum(t for _, _, t in res) / len(res),
            "problems": len(problems),
            "samples": n,
            "truncated": 100 * sum(not f for _, f, _ in res) / len(res),
            "no_answer": 100 * sum(f and not v for (_, f, _), (v, _) in zip(res, graded)) / len(res),
        }
        if not greedy:
            for k in sorted({2, 4, 8, 16, 32, 64, n}):
                if k <= n:
                    row[f"pass@{k}"] = 100 * mean_pass_at_k(counts, k)
        row["score"] = row["pass@1"] if greedy else row[f"pass@{n}"]
        tiers[name] = row
        log(f"{name}: {row['metric']} {row['score']:.1f} (valid {row['validity']:.0f}%, {len(problems)} problems)")
    weights = cfg.weights
    return {
        "tiers": tiers,
        "overall": sum(weights[k] * v["score"] for k, v in tiers.items()),
        "length": sum(v["length"] for v in tiers.values()) / len(tiers),
        "validity": sum(v["validity"] for v in tiers.values()) / len(tiers),
        "weights": weights,
    }
