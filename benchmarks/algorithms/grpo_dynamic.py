"""GRPO with DAPO's dynamic sampling and nothing else: trained only on groups whose responses are neither all
right nor all wrong, with up to 3 extra rounds of fresh prompts a step to fill the batch with such groups. Against
GRPO it isolates what skipping (and replacing) the zero-variance groups does; a step costs up to 4 rollouts.
"""

from poise.algorithms.grpo import compute_advantages as grpo_advantages

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "token-mean", "kl_coef": 0.0, "dynamic_sampling": 3}


def compute_advantages(batch, cfg):
    return grpo_advantages(batch, cfg)
