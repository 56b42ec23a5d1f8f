"""Fidelity levels of the standardized evaluation O(z).

smoke     seconds: a tiny policy and a handful of RL steps, for tests and wiring checks (not science)
standard  the default for discovery: minutes on a 2-core laptop, enough to separate algorithms
full      longer training and larger held-out sets, for confirming a discovery
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from poise.sandbox.benchmark import EvalConfig
from poise.sandbox.model import ModelConfig
from poise.sandbox.sft import SFTConfig
from poise.sandbox.trainer import RLConfig


@dataclass(frozen=True)
class Fidelity:
    name: str
    model: ModelConfig
    sft: SFTConfig
    rl: RLConfig
    eval: EvalConfig

    def to_dict(self) -> dict:
        return {"name": self.name, "model": asdict(self.model), "sft": asdict(self.sft), "rl": asdict(self.rl),
                "eval": asdict(self.eval)}


_MODEL = ModelConfig(n_layer=3, n_head=4, n_embd=128, block_size=160)
BUDGET = 100  # tokens a response may take in RL and evaluation: verbose scratchpads of 13-term chains run past it

FIDELITIES: dict[str, Fidelity] = {
    "smoke": Fidelity(
        "smoke",
        ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=160),
        SFTConfig(steps=200, batch_size=32, restart_steps=0),
        RLConfig(steps=3, prompts_per_step=4, group_size=4, num_minibatches=2, max_new_tokens=BUDGET),
        EvalConfig(heldout_size=4, samples=4, max_new_tokens=BUDGET),
    ),
    "standard": Fidelity(
        "standard", _MODEL,
        SFTConfig(),
        # few, large updates at a small learning rate: every Adam update moves every weight by about the
        # learning rate, signal or not, and the tiny policy's arithmetic does not survive many noisy ones
        # (docs/benchmarks.md §1: a coin-flip-reward control loses Overall at this setting, GRPO gains)
        RLConfig(steps=50, prompts_per_step=32, group_size=8, num_minibatches=2, lr=1e-5, max_new_tokens=BUDGET),
        EvalConfig(heldout_size=128, samples=32, max_new_tokens=BUDGET),
    ),
    "full": Fidelity(
        "full", _MODEL,
        SFTConfig(),  # the same warm start as standard: it depends on neither the held-out sets nor RL
        RLConfig(steps=150, prompts_per_step=32, group_size=8, num_minibatches=2, lr=1e-5, max_new_tokens=BUDGET),
        EvalConfig(heldout_size=256, samples=64, max_new_tokens=BUDGET),
    ),
}


def get_fidelity(name: str) -> Fidelity:
    try:
        return FIDELITIES[name]
    except KeyError:
        raise ValueError(f"unknown fidelity {name!r}; choose one of {', '.join(FIDELITIES)}") from None


# Wall seconds one evaluation takes on 2 cores (docs/benchmarks.md), and the default limit after which
# it is stopped: generous, since a busy machine can be several times slower, but finite, so a candidate
# that stalls training cannot hold a run forever.
EXPECTED_S = {"smoke": 20.0, "standard": 160.0, "full": 600.0}


# Training's share of an evaluation's wall time (the rest is the held-out evaluation): 92.1 s of 161.4 s
# on `standard` (docs/benchmarks.md §2); the other fidelities are assumed alike.
RL_SHARE = 0.57


def estimate_s(fidelity: str | float, evaluations: int, threads: int = 2, workers: int = 1, step_s: float | None = None,
               steps: int | None = None) -> float:
    """Wall seconds that ``evaluations`` evaluations take, ``workers`` at a time: from a measured training
    step (``step_s`` seconds, ``steps`` to an evaluation) when there is one, else from EXPECTED_S, which
    was measured on 2 idle cores (fewer threads per evaluation take longer). ``fidelity`` may also be the
    expected seconds of one evaluation itself (another backend's `expected_s`)."""
    if step_s is not None and steps:
        one = step_s * steps / RL_SHARE
    else:
        expected = fidelity if isinstance(fidelity, (int, float)) else EXPECTED_S.get(fidelity, 300.0)
        one = expected * max(1.0, 2 / max(1, threads))
    return one * math.ceil(evaluations / max(1, workers))


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def default_timeout_s(fidelity: str, threads: int) -> float:
    """10x the expected wall time of one evaluation, more with fewer than 2 threads."""
    return 10 * EXPECTED_S.get(fidelity, 300.0) * max(1, 2 // max(1, threads))


# The evaluation protocol's version: what a number's noise is. 1: draws in the order of the rows still alive
# (torch.multinomial), so two arms on one seed were scored with unrelated samples. 2: common random numbers
# (`poise.sandbox.noise`): noise indexed by seed, row, position and token, shared by every arm at a seed.
# Numbers of different protocols are not comparable; docs/benchmarks.md says which protocol each came from.
PROTOCOL = 2


def sandbox_fingerprint(name: str) -> str:
    """What a fidelity's numbers depend on besides the algorithm: its settings, the tiers, the training set
    and the held-out rule. Two runs compare only if it is the same; a resumed discovery run checks it, so an
    upgrade that retunes the sandbox cannot mix old and new evaluations in one archive."""
    from poise.sandbox import task

    blob = json.dumps({"fidelity": get_fidelity(name).to_dict(), "tiers": [asdict(t) for t in task.TIERS],
                       "greedy_scale": task.GREEDY_SCALE, "train_terms": list(task.TRAIN_TERMS),
                       "train_max_operand": task.TRAIN_MAX_OPERAND, "train_p_sub": task.TRAIN_P_SUB,
                       "held_out_share": task.HELD_OUT_SHARE, "protocol": PROTOCOL}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
