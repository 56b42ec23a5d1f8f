"""GRPO as DeepSeekMath states its loss: each response's token losses averaged over that response, then the mean
over responses (seq-mean-token-mean), instead of poise's GRPO, which averages over every token of the batch
(token-mean, verl's default). A control for the phenomenon Dr. GRPO names: dividing a response's loss by its
own length weighs each token of a long wrong answer less, so wrong answers are pushed shorter less hard than
right ones are pulled, and wrong answers grow longer.
"""

from poise.algorithms.grpo import compute_advantages as grpo_advantages

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "seq-mean-token-mean", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    return grpo_advantages(batch, cfg)
