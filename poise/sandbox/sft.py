"""SFT warm start: teach the tiny policy the answer format and the three scratchpad styles.

The teacher is careless (``SFTConfig.slip``), so the warm start's samples slip now and then and the
hard tiers give sparse rewards, as AIME does for a 1.5B model, while its most likely steps are right.
It is cached on disk by the hash of everything that determines it, so every candidate algorithm starts
from the very same policy.

Only trusted processes (the CLI, the evaluation workers) read or write it: candidate code runs in a
jailed hook process that cannot see the cache. Each file is checked by its SHA-256 on load (the shipped
ones against ``assets/SHA256SUMS``, cached ones against the digest written beside them), so a file
changed by anything but poise is retrained, never trained from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from poise.sandbox.model import ModelConfig, TinyGPT, pad_prompts, response_logprobs
from poise.sandbox.task import (  # noqa: F401
    BOS,
    EOS,
    HELD_OUT_SHARE,
    PAD,
    STYLES,
    draw_problems,
    encode,
    held_out_prompts,  # held_out_prompts is re-exported
    solution,
)

CACHE_VERSION = 2  # bump when the SFT code changes what it produces


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 30
    style_weights: tuple[float, float, float] = (0.45, 0.35, 0.20)  # verbose, concise, direct
    # the teacher answers directly (no scratchpad) only chains up to this many terms, as one answers an
    # easy sum at a glance; longer ones always get a scratchpad (0 = direct at any length)
    direct_max_terms: int = 3
    # The teacher writes its scratchpads in full, whatever the generation budget of RL and evaluation: the
    # warm start learns verbose scratchpads that, on the longest chains, run past that budget (invalid)
    max_response_tokens: int = 120
    # the teacher's problems: chains of min_terms..max_terms numbers in 1..max_operand (uniform),
    # independent of the held-out tiers
    min_terms: int = 2
    max_terms: int = 12
    max_operand: int = 19
    p_sub: float = 0.4
    slip: float = 0.15  # per-step error rate of the SFT teacher (see task.solution)
    no_answer: float = 0.06  # share of scratchpads that end without stating the final answer (invalid)
    # A second cosine cycle from a lower peak (a warm restart) after the first: it settles the policy into
    # a flatter optimum, whose arithmetic survives the noise of RL updates (docs/benchmarks.md §1 measures
    # a policy without it losing its greedy accuracy to a null, coin-flip-reward training run)
    restart_steps: int = 1500
    restart_lr: float = 1e-3
    seed: int = 0


def cache_dir() -> Path:
    return Path(os.environ.get("POISE_CACHE", Path.home() / ".cache" / "poise"))


# Warm starts that ship with the package (the standard one), so a first run does not spend minutes on
# SFT. They are found by the same key as the cache, so any change to the configuration retrains.
ASSETS = Path(__file__).parent / "assets"


def sft_key(model_cfg: ModelConfig, sft_cfg: SFTConfig) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "model": asdict(model_cfg), "sft": asdict(sft_cfg),
                       # the teacher's data depends on neither the tiers nor the held-out sets (task.reserved)
                       "reserved": HELD_OUT_SHARE, "torch": torch.__version__.split("+")[0]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sft_batch(rng: random.Random, cfg: SFTConfig, exclude: set[str], n: int):
    probs = draw_problems(rng, n, (cfg.min_terms, cfg.max_terms), cfg.max_operand, cfg.p_sub, exclude)
    no_direct = (*cfg.style_weights[:2], 0.0)
    styles = [rng.choices(STYLES, weights=cfg.style_weights if not cfg.direct_max_terms
                          or len(p.operands) <= cfg.direct_max_terms else no_direct)[0] for p in probs]
    prompts = pad_prompts([[BOS, *encode(p.prompt)] for p in probs])
    answers = [rng.random() >= cfg.no_answer for _ in probs]
    resp = [(encode(solution(p, s, rng, cfg.slip, a)) + [EOS])[:cfg.max_response_tokens]
            for p, s, a in zip(probs, styles, answers)]
    T = max(len(r) for r in resp)
    tokens = torch.full((n, T), PAD, dtype=torch.long)
    for i, r in enumerate(resp):
        tokens[i, :len(r)] = torch.tensor(r)
    return prompts, tokens, (tokens != PAD).float()


def _sft_cycle(model: TinyGPT, cfg: SFTConfig, rng: random.Random, exclude: set[str], steps: int, peak: float,
               warmup: int, precision: str, progress, done: int, total: int, device: str) -> None:
    """One cosine cycle of AdamW (a fresh optimiser) from ``peak`` to zero over ``steps``."""
    opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    for step in range(steps):
        lr = peak * (min(1.0, (step + 1) / warmup) if warmup else 1.0) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        prompts, tokens, mask = (t.to(device) for t in sft_batch(rng, cfg, exclude, cfg.batch_size))
        logp, _ = response_logprobs(model, prompts, tokens, mask, precision)
        loss = -(logp.sum() / mask.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(done + step + 1, total, float(loss.detach()))


def train_sft(model_cfg: ModelConfig, cfg: SFTConfig, exclude: set[str], precision: str = "fp32",
              progress: Callable[[int, int, float], None] | None = None, device: str = "cpu") -> TinyGPT:
    torch.manual_seed(cfg.seed)
    model = TinyGPT(model_cfg).to(device)
    model.train()
    total = cfg.steps + cfg.restart_steps
    _sft_cycle(model, cfg, random.Random(f"sft/{cfg.seed}"), exclude, cfg.steps, cfg.lr, cfg.warmup, precision,
               progress, 0, total, device)
    if cfg.restart_steps:
        _sft_cycle(model, cfg, random.Random(f"sft/{cfg.seed}/restart"), exclude, cfg.restart_steps, cfg.restart_lr,
                   0, precision, progress, cfg.steps, total, device)
    model.eval()
    return model.cpu()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_digest(path: Path) -> str | None:
    """The digest a warm-start file must have: the shipped manifest's, or the one written beside a cached file."""
    if path.parent == ASSETS:
        try:
            sums = dict(line.split()[::-1] for line in (ASSETS / "SHA256SUMS").read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            return None
        return sums.get(path.name)
    try:
        return path.with_name(path.name + ".sha256").read_text().strip() or None
    except OSError:
        return None


def load_or_train_sft(model_cfg: ModelConfig, cfg: SFTConfig, precision: str = "fp32", progress=None,
                      log: Callable[[str], None] = lambda s: None) -> TinyGPT:
    """The cached warm start for this configuration, training (and caching) it on first use. The file is
    written atomically, so a crash mid-write never leaves a corrupt cache entry."""
    key = sft_key(model_cfg, cfg)
    path = cache_dir() / "sft" / f"{key}.pt"
    for candidate in (path, ASSETS / f"sft-{key}.pt"):
        if not candidate.exists():
            continue
        expected = _expected_digest(candidate)
        if expected is None or _digest(candidate) != expected:
            log(f"cached SFT policy {candidate} does not match its SHA-256 digest "
                f"({'none recorded' if expected is None else 'changed since poise wrote it'}); retraining it")
            continue
        try:
            model = TinyGPT(model_cfg)
            model.load_state_dict(torch.load(candidate, map_location="cpu", weights_only=True))
            model.eval()
            return model
        except Exception as e:  # a damaged file: retrain rather than fail
            log(f"cached SFT policy {candidate} is unreadable ({e}); retraining it")
    t0 = time.time()
    log(f"training the SFT warm start (cached afterwards in {path})")
    model = train_sft(model_cfg, cfg, set(), precision, progress)  # task.reserved keeps held-out prompts out
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    digest = path.with_name(path.name + ".sha256")
    digest_tmp = digest.with_suffix(f".tmp{os.getpid()}")
    digest_tmp.write_text(_digest(tmp) + "\n")
    os.replace(digest_tmp, digest)  # the digest first: a crash in between leaves a mismatch, so a retrain
    os.replace(tmp, path)
    log(f"SFT warm start trained in {time.time() - t0:.0f}s")
    return model
