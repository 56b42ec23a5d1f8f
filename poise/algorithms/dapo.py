"""DAPO: clip-higher, token-level loss and soft overlong punishment on GRPO (arXiv 2503.14476).

Three of DAPO's four techniques:

1. Clip-higher: the ratio is clipped to [1 - 0.2, 1 + 0.28]. The wider upper bound lets unlikely
   tokens with a positive advantage grow, which delays entropy collapse.
2. Token-level loss: sum over all response tokens of the batch divided by their count (token-mean),
   so every token weighs the same and long responses are not diluted.
3. Overlong reward shaping, added to the task reward before the advantages are taken. With budget
   L_max = ``batch.max_len`` and cache L_c = ``overlong_cache`` (default max(1, L_max // 4)):

       R_len(y) = 0                              if |y| <= L_max - L_c
                  ((L_max - L_c) - |y|) / L_c    if L_max - L_c < |y| <= L_max
                  -1                             if y was truncated (no end token within L_max)

   The advantage is then GRPO's, A_i = (r_i - mean_g) / (std_g + eps) with r_i = s_i + R_len(y_i).

The fourth, dynamic sampling (groups whose responses are all right or all wrong are dropped and fresh
prompts sampled until the batch is full of groups with a signal), is off here: it changes how many rollouts
a step costs, and candidates are compared at a fixed budget. The sandbox trainer runs it for any algorithm
whose CONFIG sets ``dynamic_sampling`` (extra rounds a step, at most 3); `benchmarks/algorithms/dapo_dynamic.py`
is DAPO with all four, measured in docs/benchmarks.md §16.

Choices the paper leaves open: L_c scales with the budget (the paper uses 4096 of 20480, a fifth;
a quarter here because the sandbox budget is tiny); a response that ends exactly at L_max gets -1 like
a truncated one, which is the limit of the linear ramp; single-response groups follow GRPO (A = r);
no KL, as in the paper.
"""

import torch

from poise.algorithms.base import group_count, group_mean, group_std, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean", "kl_coef": 0.0}


def shape_rewards(batch, cfg):
    L_max = batch.max_len
    L_c = cfg.get("overlong_cache", max(1, L_max // 4))
    ramp = (((L_max - L_c) - batch.lengths.float()) / L_c).clamp(-1.0, 0.0)
    penalty = torch.where(batch.truncated, torch.full_like(ramp, -1.0), ramp)
    return batch.rewards.float() + penalty


def compute_advantages(batch, cfg):
    # batch.rewards already holds shape_rewards' output: the trainer shapes before this call.
    r = batch.rewards.float()
    single = group_count(batch.group_ids) < 2
    mean = torch.where(single, torch.zeros_like(r), group_mean(r, batch.group_ids))
    std = torch.where(single, torch.ones_like(r), group_std(r, batch.group_ids, unbiased=True))
    return to_tokens((r - mean) / (std + cfg.eps), batch.mask)
