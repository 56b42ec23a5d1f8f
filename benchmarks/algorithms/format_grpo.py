"""Format-only GRPO: GRPO rewarded for a valid answer (the format, ended within the budget) whether or not it is
right (a control). What it gains over the SFT start is what the format alone buys; what GRPO gains over it is
what rewarding correctness adds.
"""

from poise.algorithms.grpo import compute_advantages as grpo_advantages


def shape_rewards(batch, cfg):
    return batch.valid.float()


def compute_advantages(batch, cfg):
    return grpo_advantages(batch, cfg)
