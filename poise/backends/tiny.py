"""The `tiny` backend: the standardized evaluation O(z) on the embedded sandbox.

evaluate(algorithm, fidelity, seed) -> EvalResult(trajectory, metrics)
    start from the cached SFT policy (the same for every candidate), train it with the algorithm,
    then score it on the held-out suite. Runs on the CPU (or CUDA when available and asked for).
`TinyBackend` is the same behind the backend contract (`poise.backends.base.Backend`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from typing import Callable

import torch

from poise.algorithms.base import Algorithm
from poise.backends.base import BackendSpec, EvalResult, Tier
from poise.evaluation.fidelity import EXPECTED_S, Fidelity, get_fidelity, sandbox_fingerprint
from poise.sandbox.benchmark import evaluate_policy
from poise.sandbox.model import TinyGPT
from poise.sandbox.sft import held_out_prompts, load_or_train_sft
from poise.sandbox.trainer import train_rl


def sft_policy(fid: Fidelity, progress=None, log: Callable[[str], None] = lambda s: None) -> TinyGPT:
    return load_or_train_sft(fid.model, fid.sft, precision="fp32", progress=progress, log=log)


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when available (and not overridden with POISE_DEVICE=cpu or device="cpu"), else the CPU."""
    device = os.environ.get("POISE_DEVICE", device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def rl_start(fid: Fidelity, device: str = "auto", sft_progress=None,
             log: Callable[[str], None] = lambda s: None) -> tuple[TinyGPT, TinyGPT, set[str]]:
    """What RL starts from: the policy to train (a copy of the SFT start), the frozen reference (the start
    itself) and the prompts training must never see (both held-out splits, whichever is scored)."""
    ref = sft_policy(fid, sft_progress, log).to(pick_device(device))
    policy = copy.deepcopy(ref)
    for p in ref.parameters():
        p.requires_grad_(False)
    return policy, ref, held_out_prompts(fid.eval.heldout_size, fid.eval.heldout_seed)


def evaluate(algorithm: Algorithm, fidelity: Fidelity | str, seed: int,
             on_step: Callable[[int, dict], None] | None = None, log: Callable[[str], None] = lambda s: None,
             sft_progress=None, device: str = "auto", split: str = "search") -> EvalResult:
    """Train from the SFT start with ``algorithm`` and score on the held-out suite. Raises CandidateError
    (from poise.sandbox.trainer) when the algorithm fails; the message names the problem.

    ``split="confirm"`` scores on the second held-out set (re-evaluation of discoveries). Training never
    sees a prompt of either set."""
    fid = get_fidelity(fidelity) if isinstance(fidelity, str) else fidelity
    if split != fid.eval.split:
        fid = dataclasses.replace(fid, eval=dataclasses.replace(fid.eval, split=split))
    t0 = time.time()
    policy, ref, exclude = rl_start(fid, device, sft_progress, log)
    t_train = time.time()
    trajectory = train_rl(algorithm, policy, ref, fid.rl, seed, exclude, on_step)
    t_eval = time.time()
    metrics = evaluate_policy(policy, fid.eval, seed)
    return EvalResult(algorithm.name, seed, fid.name, trajectory, metrics, time.time() - t0,
                      {"split": fid.eval.split, "train_s": t_eval - t_train, "eval_s": time.time() - t_eval,
                       "params": policy.num_params(), "hooks": algorithm.hooks})


def evaluate_start(fidelity: Fidelity | str, seed: int, log: Callable[[str], None] = lambda s: None,
                   sft_progress=None, device: str = "auto") -> EvalResult:
    """The held-out results of the SFT start itself (no RL): the bar every algorithm must clear."""
    fid = get_fidelity(fidelity) if isinstance(fidelity, str) else fidelity
    t0 = time.time()
    policy = sft_policy(fid, sft_progress, log).to(pick_device(device))
    metrics = evaluate_policy(policy, fid.eval, seed)
    return EvalResult("sft", seed, fid.name, [], metrics, time.time() - t0, {"params": policy.num_params()})


class TinyBackend:
    """The embedded sandbox at one fidelity (smoke | standard | full)."""

    def __init__(self, spec: BackendSpec):
        self.spec = spec
        self.fid = get_fidelity(spec.fidelity)  # ValueError names the fidelities
        self.steps = self.fid.rl.steps
        from poise.sandbox.task import TIERS

        self.tiers = tuple(Tier(t.name, t.metric, t.weight) for t in TIERS)

    def prepare(self, progress=None, log: Callable[[str], None] = lambda s: None) -> None:
        sft_policy(self.fid, progress, log)

    def evaluate(self, algorithm: Algorithm, seed: int, on_step: Callable[[int, dict], None] | None = None,
                 split: str = "search") -> EvalResult:
        return evaluate(algorithm, self.fid, seed, on_step=on_step, split=split)

    def evaluate_start(self, seed: int, split: str = "search") -> EvalResult:
        fid = self.fid if split == self.fid.eval.split else dataclasses.replace(
            self.fid, eval=dataclasses.replace(self.fid.eval, split=split))
        return evaluate_start(fid, seed)

    def fingerprint(self) -> str:
        return sandbox_fingerprint(self.fid.name)

    def expected_s(self, threads: int) -> float:
        return EXPECTED_S.get(self.fid.name, 300.0)
