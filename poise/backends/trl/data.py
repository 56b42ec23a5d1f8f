"""Problems with answers for the TRL backend: the training set and the held-out benchmarks.

Sources: ``tiny-math`` (the sandbox's task rendered as natural-language problems: its RL training
distribution, and ``tiny-math:TIER`` for a held-out tier, whose search and confirmation sets are the
sandbox's own, never trained on), a ``.jsonl`` or ``.parquet`` file, or ``hf:NAME[:CONFIG]:SPLIT`` (any
`datasets` source; offline it must already be in the local cache)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from poise.backends.base import BackendError
from poise.backends.trl.config import BenchmarkConfig, DataConfig

HELD_OUT_SEED = 1234  # the sandbox's held-out seed, so tiny-math:TIER is the sandbox tier's own set


@dataclass(frozen=True)
class MathProblem:
    question: str
    answer: str


def render_tiny(p) -> MathProblem:
    """A sandbox problem ("14+7-9+3=") as a natural-language one."""
    terms = [str(p.operands[0])]
    for op, x in zip(p.ops, p.operands[1:]):
        terms += [op, str(x)]
    return MathProblem(f"What is {' '.join(terms)}?", str(p.answer))


def _tiny_tier(name: str):
    from poise.sandbox.task import TIER_BY_NAME

    if name not in TIER_BY_NAME:
        raise BackendError(f"tiny-math has no tier {name!r}; its tiers are {', '.join(TIER_BY_NAME)}")
    return TIER_BY_NAME[name]


def tiny_training(n: int, seed: int) -> list[MathProblem]:
    """``n`` training problems of the sandbox's RL distribution, never a held-out one."""
    from poise.sandbox.task import training_problems

    return [render_tiny(p) for p in training_problems(random.Random(f"trl/train/{seed}"), n)]


def _rows(source: str) -> list[dict]:
    import datasets

    if source.startswith("hf:"):
        parts = source[3:].split(":")
        if len(parts) not in (2, 3):
            raise BackendError(f"{source!r}: write hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
        name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else tuple(parts)
        try:
            return list(datasets.load_dataset(name, config, split=split))
        except Exception as e:  # noqa: BLE001 - any loading failure is the user's source to fix
            raise BackendError(f"cannot load {source!r} with datasets: {e}") from None
    path = Path(source)
    if not path.exists():
        raise BackendError(f"data source {source!r}: no such file (give a .jsonl or .parquet file, tiny-math, or "
                           f"hf:NAME:SPLIT)")
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise BackendError(f"{source}: unknown file type {path.suffix!r}; use .jsonl or .parquet")
    try:
        return list(datasets.load_dataset(kind, data_files=str(path), split="train"))
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"cannot read {source}: {e}") from None


def from_rows(rows: list[dict], question: str, answer: str, source: str) -> list[MathProblem]:
    if not rows:
        raise BackendError(f"{source} holds no problems")
    missing = [f for f in (question, answer) if f not in rows[0]]
    if missing:
        raise BackendError(f"{source}: its rows have no field {missing[0]!r} (fields: {', '.join(sorted(rows[0]))}); "
                           f"set data.question / data.answer to the right names")
    return [MathProblem(str(r[question]), str(r[answer])) for r in rows]


def training_set(cfg: DataConfig, n: int, seed: int) -> list[MathProblem]:
    if cfg.train == "tiny-math":
        return tiny_training(n, seed)
    problems = from_rows(_rows(cfg.train), cfg.question, cfg.answer, cfg.train)
    random.Random(f"trl/train/{seed}").shuffle(problems)
    return [problems[i % len(problems)] for i in range(n)]


def benchmark_set(bench: BenchmarkConfig, data: DataConfig, split: str) -> list[MathProblem]:
    """The problems of one benchmark's ``split``: "search" or "confirm" (disjoint from it)."""
    if split not in ("search", "confirm"):
        raise ValueError(f"unknown held-out split {split!r}; use 'search' or 'confirm'")
    source = bench.confirm if split == "confirm" and bench.confirm else bench.source
    if source.startswith("tiny-math:"):
        from poise.sandbox.task import held_out_split

        tier = _tiny_tier(source.split(":", 1)[1])
        size = bench.limit or 128
        problems = [render_tiny(p) for p in held_out_split(tier, size, HELD_OUT_SEED, split)]
    else:
        problems = from_rows(_rows(source), data.question, data.answer, source)
        if not bench.confirm:  # one file for both: alternate problems, so the two sets never share one
            problems = problems[0::2] if split == "search" else problems[1::2]
    problems = problems[:bench.limit] if bench.limit else problems
    if not problems:
        raise BackendError(f"benchmark source {source!r} leaves no problems for the {split} split (a file without a "
                           f"confirm source is split in two, alternating: it needs at least 2 problems)")
    return problems


def render(problem: MathProblem, data: DataConfig, tokenizer) -> str:
    """The prompt as the model sees it: the template, in the tokenizer's chat template when it has one."""
    text = data.template.format(question=problem.question)
    if data.chat == "auto" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text
