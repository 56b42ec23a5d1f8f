"""Null GRPO: GRPO trained on coin-flip rewards (probability 0.3), unrelated to correctness (a control).

Whatever it does to the policy is what the optimiser's noise does alone: an algorithm has to beat it, and
the SFT start, to have learnt anything. The coin is seeded from the batch itself, so a run is reproducible.
"""

import torch

from poise.algorithms.grpo import compute_advantages as grpo_advantages


def shape_rewards(batch, cfg):
    seed = int(batch.lengths.sum()) * 1_000_003 + int(batch.mask.shape[1])
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch.rewards.shape[0], generator=gen) < 0.3).float()


def compute_advantages(batch, cfg):
    return grpo_advantages(batch, cfg)
