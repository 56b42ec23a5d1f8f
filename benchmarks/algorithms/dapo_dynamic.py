"""DAPO with its fourth technique, dynamic sampling: poise's DAPO (clip-higher, token-level loss, overlong shaping)
trained only on groups whose responses are neither all right nor all wrong, with up to 3 extra rounds of fresh
prompts a step to fill the batch with such groups (the trainer's ``dynamic_sampling``). A step then costs up to
4 rollouts; the benchmark reports the rounds it took.
"""

from poise.algorithms.dapo import compute_advantages as dapo_advantages
from poise.algorithms.dapo import shape_rewards as dapo_shaping

CONFIG = {"clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean", "kl_coef": 0.0, "dynamic_sampling": 3}


def shape_rewards(batch, cfg):
    return dapo_shaping(batch, cfg)


def compute_advantages(batch, cfg):
    return dapo_advantages(batch, cfg)
