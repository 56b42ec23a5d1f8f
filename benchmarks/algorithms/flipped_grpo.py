"""Flipped GRPO: GRPO with the sign of every advantage reversed (a deliberately broken control).

It rewards wrong answers and punishes right ones. A sandbox that cannot tell it from GRPO cannot tell
algorithms apart at all.
"""

from poise.algorithms.base import group_count, group_mean, group_std, to_tokens
import torch


def compute_advantages(batch, cfg):
    s = batch.rewards.float()
    single = group_count(batch.group_ids) < 2
    mean = torch.where(single, torch.zeros_like(s), group_mean(s, batch.group_ids))
    std = torch.where(single, torch.ones_like(s), group_std(s, batch.group_ids, unbiased=True))
    return -to_tokens((s - mean) / (std + cfg.eps), batch.mask)
