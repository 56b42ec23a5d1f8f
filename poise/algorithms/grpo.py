"""GRPO: group-relative advantages with PPO's clipped ratio (DeepSeekMath, arXiv 2402.03300).

For a prompt with G sampled responses and outcome scores s_1..s_G:

    A_i = (s_i - mean_j s_j) / (std_j s_j + eps),      std with Bessel's correction (G - 1), eps = 1e-6

broadcast to every response token. A group of one response gets mean 0 and std 1 (A_i = s_i). This is
exactly verl's ``compute_grpo_outcome_advantage``. The loss is PPO's clipped surrogate
-min(r A, clip(r, 1-0.2, 1+0.2) A) averaged over all response tokens of the mini-batch (token-mean,
verl's default), plus an optional k3 KL to the reference policy, weighted by ``kl_coef`` (0 by default,
as in DAPO-era recipes).
"""

import torch

from poise.algorithms.base import group_count, group_mean, group_std, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "token-mean", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    s = batch.rewards.float()
    single = group_count(batch.group_ids) < 2
    mean = torch.where(single, torch.zeros_like(s), group_mean(s, batch.group_ids))
    std = torch.where(single, torch.ones_like(s), group_std(s, batch.group_ids, unbiased=True))
    return to_tokens((s - mean) / (std + cfg.eps), batch.mask)
