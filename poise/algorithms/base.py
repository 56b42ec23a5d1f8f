"""The algorithm interface: what a candidate RL algorithm sees and what it must return.

A candidate is Python source that defines

    compute_advantages(batch: RolloutBatch, cfg: AlgoConfig) -> Tensor   # [N, T] or [N]   (required)
    compute_policy_loss(logp, batch, advantages, cfg) -> (loss, metrics)  # optional, default: PPO clip
    shape_rewards(batch, cfg) -> Tensor[N]                               # optional, default: none
    CONFIG = {...}                                                       # optional AlgoConfig overrides

It sees only plain tensors. The trainer owns everything else (sampling, the KL and entropy terms,
the optimiser, the metrics), so a candidate can change *how* the policy is pushed but never how it
is scored.

Layout: N = P * G responses, P prompts with G samples each, contiguous (rows g*G .. g*G+G-1 form
group g, as in TRL). ``group_ids`` is still given so that code written against it also works with
verl, whose groups are keyed by uid and need not be contiguous.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

MAX_DYNAMIC_ROUNDS = 3  # a step's rollouts cost at most 4 times a fixed batch's
# why a search refuses a candidate that sets dynamic_sampling (told to the implementer, and to the user)
FIXED_BUDGET = ("CONFIG sets dynamic_sampling, which samples up to 4 times the rollouts a step; a search compares "
                "every candidate at the baseline's rollout budget: remove dynamic_sampling from CONFIG and give "
                "groups without a signal their weight in compute_advantages instead")
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


@dataclass
class RolloutBatch:
    """One RL step's rollouts. Shapes: N responses, T = longest response (right-padded)."""

    rewards: Tensor  # [N] float, the task reward (1.0 correct, 0.0 otherwise) or the shaped reward
    correct: Tensor  # [N] bool, the final answer is right (implies valid)
    valid: Tensor  # [N] bool, the response follows the answer format and ended before max_len
    lengths: Tensor  # [N] long, response tokens including the end token
    mask: Tensor  # [N, T] float, 1.0 on response tokens
    group_ids: Tensor  # [N] long, which prompt each response answers
    old_logp: Tensor  # [N, T] log-prob of each sampled token under the policy that sampled it
    # [N, T] log-prob under the frozen reference (the SFT start). Computed only for an algorithm that uses
    # it (kl_coef != 0, or its code names `ref_logp`); otherwise it equals old_logp (a KL of zero)
    ref_logp: Tensor
    entropy: Tensor  # [N, T] token entropy of the sampling distribution
    truncated: Tensor  # [N] bool, hit max_len without an end token
    group_size: int
    max_len: int  # the generation budget in tokens

    @property
    def num_responses(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def logp(self) -> Tensor:
        """Current log-probs: at advantage time the policy has not moved yet, so they equal ``old_logp``."""
        return self.old_logp

    def select(self, idx: Tensor) -> "RolloutBatch":
        """Rows ``idx`` (a mini-batch). Group ids are kept, so group statistics must be taken before splitting."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v[idx] if isinstance(v, Tensor) else v
        return RolloutBatch(**kw)

    def clone(self) -> "RolloutBatch":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).clone()
                                            for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), Tensor)})


@dataclass
class AlgoConfig:
    """Algorithm-level knobs. Trainer hyperparameters (lr, batch, steps) are not here: they stay fixed
    across candidates, so that measured differences come from the mechanism, as in the paper."""

    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.2
    loss_agg: str = "token-mean"  # one of LOSS_AGG_MODES
    kl_coef: float = 0.0  # weight of KL(pi || pi_ref) in the loss, added by the trainer
    kl_type: str = "k3"  # k1 | k2 | k3 (low-variance, as verl's low_var_kl)
    entropy_coef: float = 0.0  # entropy bonus, added by the trainer
    eps: float = 1e-6  # verl's epsilon in group normalisation
    # DAPO's dynamic sampling: up to this many extra rollout rounds per step replace the groups whose responses
    # are all right or all wrong (0 = off). It buys signal with samples: a step then costs up to
    # 1 + dynamic_sampling rollouts, so the sandbox trainer alone runs it and reports the rounds it took.
    dynamic_sampling: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # algorithm-specific knobs

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AlgoConfig":
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: d.pop(k) for k in list(d) if k in names}
        extra = dict(d.pop("extra", {}) or {})
        extra.update(d)
        cfg = cls(**known, extra=extra)
        cfg.validate()
        return cfg

    def get(self, key: str, default: Any = None) -> Any:
        return self.extra.get(key, default)

    def validate(self) -> None:
        for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name}={v!r} must be a finite number")
            try:  # as a float: a huge int would pass isfinite and then overflow in the trainer's arithmetic
                f = float(v)
            except OverflowError:
                raise ValueError(f"{name}={v!r} must be a finite number (it is too large for a float)") from None
            if not math.isfinite(f):
                raise ValueError(f"{name}={v!r} must be a finite number")
            object.__setattr__(self, name, f)
        if self.loss_agg not in LOSS_AGG_MODES:
            raise ValueError(f"loss_agg={self.loss_agg!r} is not one of {LOSS_AGG_MODES}")
        if self.kl_type not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_type={self.kl_type!r} must be k1, k2 or k3")
        ds = self.dynamic_sampling
        if isinstance(ds, bool) or not isinstance(ds, int) or not 0 <= ds <= MAX_DYNAMIC_ROUNDS:
            raise ValueError(f"dynamic_sampling={ds!r} must be a whole number of extra rollout rounds from 0 (off) "
                             f"to {MAX_DYNAMIC_ROUNDS}")
        if not (0 <= self.clip_low < 1) or self.clip_high < 0:
            raise ValueError(f"clip_low must be in [0, 1) and clip_high >= 0 (got {self.clip_low}, {self.clip_high})")


# ----------------------------------------------------------------------------------------------
# Pure building blocks shared by the built-ins and offered to candidates.


def _group_sum(values: Tensor, group_ids: Tensor) -> Tensor:
    """Sum of ``values`` per group: [N] -> [num_groups] (float32, on the ids' device)."""
    n = int(group_ids.max()) + 1 if group_ids.numel() else 0
    return torch.zeros(n, dtype=torch.float32, device=group_ids.device).index_add_(0, group_ids, values)


def _weights(like: Tensor, weight: Tensor | None) -> Tensor:
    return torch.ones_like(like, dtype=torch.float32) if weight is None else weight.to(torch.float32)


def group_mean(x: Tensor, group_ids: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-response mean of ``x`` over its group (optionally over rows with weight 1 only). [N] -> [N].
    A group with zero total weight gets mean 0."""
    w = _weights(x, weight)
    s = _group_sum(x.float() * w, group_ids)
    c = _group_sum(w, group_ids)
    return (s / c.clamp_min(1e-12))[group_ids] * (c[group_ids] > 0)


def group_std(x: Tensor, group_ids: Tensor, unbiased: bool = True, weight: Tensor | None = None) -> Tensor:
    """Per-response std of ``x`` over its group. ``unbiased`` uses G-1 (torch.std, as verl and TRL do).
    Groups with too few rows for the estimator get 0."""
    w = _weights(x, weight)
    ss = _group_sum((x.float() - group_mean(x, group_ids, w)) ** 2 * w, group_ids)
    c = _group_sum(w, group_ids)
    denom = (c - 1) if unbiased else c
    var = torch.where(denom > 0, ss / denom.clamp_min(1e-12), torch.zeros_like(ss))
    return var.sqrt()[group_ids]


def group_count(group_ids: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-response number of (weighted) rows in its group. [N] -> [N] float."""
    return _group_sum(_weights(group_ids, weight), group_ids)[group_ids]


def to_tokens(adv: Tensor, mask: Tensor) -> Tensor:
    """Broadcast per-response advantages [N] over response tokens [N, T] (zero outside the mask)."""
    if adv.dim() == 1:
        adv = adv[:, None]
    return adv * mask


def aggregate(loss_mat: Tensor, mask: Tensor, mode: str = "token-mean", norm_len: int | None = None) -> Tensor:
    """Reduce a per-token loss [N, T] to a scalar (verl's agg_loss).

    token-mean: sum(L*m) / sum(m)                      DAPO's token-level loss, verl's default
    token-sum: sum(L*m)
    seq-mean-token-mean: mean_i( sum_t L*m / sum_t m )  the original GRPO (DeepSeekMath)
    seq-mean-token-sum: mean_i( sum_t L*m )
    seq-mean-token-sum-norm: sum(L*m) / (N * norm_len) Dr. GRPO's constant normaliser
    """
    m = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * m).sum() / m.sum().clamp_min(1.0)
    if mode == "token-sum":
        return (loss_mat * m).sum()
    if mode == "seq-mean-token-mean":
        return ((loss_mat * m).sum(-1) / m.sum(-1).clamp_min(1.0)).mean()
    if mode == "seq-mean-token-sum":
        return (loss_mat * m).sum(-1).mean()
    if mode == "seq-mean-token-sum-norm":
        L = norm_len if norm_len is not None else loss_mat.shape[-1]
        return (loss_mat * m).sum() / (loss_mat.shape[0] * L)
    raise ValueError(f"unknown loss aggregation {mode!r}; use one of {LOSS_AGG_MODES}")


def ppo_clip_loss(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, clip_low: float = 0.2,
                  clip_high: float = 0.2, agg: str = "token-mean", norm_len: int | None = None) -> tuple[Tensor, dict]:
    """PPO's clipped surrogate, to minimise: -min(r*A, clip(r, 1-clip_low, 1+clip_high)*A), r = exp(logp-old_logp).
    Returns the aggregated loss and the fraction of response tokens whose ratio was clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    loss_mat = -torch.minimum(unclipped, clipped)
    m = mask.to(logp.dtype)
    with torch.no_grad():
        was_clipped = (clipped < unclipped).to(logp.dtype)
        clip_frac = (was_clipped * m).sum() / m.sum().clamp_min(1.0)
    return aggregate(loss_mat, mask, agg, norm_len), {"clip_frac": float(clip_frac)}


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3).
    k3 = exp(ref - logp) - (ref - logp) - 1 is non-negative with low variance; clamped as verl does."""
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d ** 2
    if kind == "k3":
        d = d.clamp(-20.0, 20.0)
        return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


def surrogate(value: Tensor, grad: Tensor, logp: Tensor) -> Tensor:
    """A scalar whose value is ``value`` and whose gradient with respect to ``logp`` is ``grad``.

    This is how a policy loss trains the policy: computed on a leaf copy of the log-probs (in the hook
    process, or in the trainer for poise's own code), it comes back as its value and d loss / d logp,
    and the trainer backpropagates this through the policy. ``s - s.detach()`` is exactly 0, so the value
    is the loss to the bit, and the gradient of ``(logp * grad).sum()`` is ``grad`` to the bit."""
    s = (logp * grad.to(device=logp.device, dtype=logp.dtype)).sum()
    return value.to(device=logp.device, dtype=logp.dtype) + (s - s.detach())


def default_policy_loss(logp: Tensor, batch: RolloutBatch, advantages: Tensor, cfg: AlgoConfig) -> tuple[Tensor, dict]:
    """The GRPO/PPO clipped loss with the configured clip range and aggregation."""
    return ppo_clip_loss(logp, batch.old_logp, advantages, batch.mask, cfg.clip_low, cfg.clip_high,
                         cfg.loss_agg, norm_len=batch.max_len)


# ----------------------------------------------------------------------------------------------
# An algorithm as the trainer sees it.

AdvantageFn = Callable[[RolloutBatch, AlgoConfig], Tensor]
PolicyLossFn = Callable[[Tensor, RolloutBatch, Tensor, AlgoConfig], "tuple[Tensor, dict]"]
RewardShapingFn = Callable[[RolloutBatch, AlgoConfig], Tensor]


@dataclass
class Algorithm:
    name: str
    compute_advantages: AdvantageFn
    compute_policy_loss: PolicyLossFn = default_policy_loss
    shape_rewards: RewardShapingFn | None = None
    config: AlgoConfig = field(default_factory=AlgoConfig)
    source: str = ""  # the code, for hashing and the archive
    origin: str = ""  # "builtin:grpo" or a file path
    summary: str = ""  # first line of the module docstring

    @property
    def hooks(self) -> list[str]:
        out = ["compute_advantages"]
        if self.compute_policy_loss is not default_policy_loss:
            out.append("compute_policy_loss")
        if self.shape_rewards is not None:
            out.append("shape_rewards")
        return out
