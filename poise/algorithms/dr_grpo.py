"""Dr. GRPO: GRPO without the std division and with a constant loss normaliser (arXiv 2503.20783).

For a prompt with G responses and outcome scores s_1..s_G:

    A_i = s_i - mean_j s_j

broadcast to every response token, and the clipped PPO surrogate is aggregated as

    loss = 1 / (N * L_max) * sum_i sum_t l_{i,t}          (seq-mean-token-sum-norm)

with L_max the generation budget (``batch.max_len``), a constant, not the longest response in the
batch. GRPO's two normalisers each bias the update: dividing by the group std up-weights prompts that
are nearly always solved or nearly always failed (the "question-level difficulty bias"), and the
per-response 1/|o_i| makes long wrong answers cheaper than short ones (the "length bias"). Removing
both leaves an unbiased policy-gradient estimate with a group-mean baseline.

Choices the paper leaves open: a group of one response keeps mean 0 (A_i = s_i), exactly as verl's
``compute_grpo_outcome_advantage`` with ``norm_adv_by_std_in_grpo=False``; clip 0.2 and no KL, as
for GRPO here.
"""

import torch

from poise.algorithms.base import group_count, group_mean, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "seq-mean-token-sum-norm", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    s = batch.rewards.float()
    single = group_count(batch.group_ids) < 2
    mean = torch.where(single, torch.zeros_like(s), group_mean(s, batch.group_ids))
    return to_tokens(s - mean, batch.mask)
