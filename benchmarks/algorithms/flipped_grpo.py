"""Flipped GRPO: GRPO with the sign of every advantage reversed (a deliberately broken control).

It rewards wrong answers and punishes right ones. A sandbox that cannot tell it from GRPO cannot tell
algorithms apart at all.
"""

from poise.algorithms.grpo import compute_advantages as grpo_advantages


def compute_advantages(batch, cfg):
    return -grpo_advantages(batch, cfg)
