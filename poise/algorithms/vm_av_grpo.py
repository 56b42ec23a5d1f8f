"""VM-AV-GRPO: validity masking plus analytic-variance scaling (POISE, arXiv 2603.23951).

Group statistics are taken over the format-valid responses only, so a malformed response neither
drags the baseline down nor earns partial credit, and every group keeps the strict ordering

    invalid  <<  valid-wrong  <  valid-correct.

With v_i the validity flag and c_i the correctness flag of response i in group g:

    p_v = sum_i v_i c_i / sum_i v_i                                  pass rate among valid responses
    A_i = (c_i - p_v) / sqrt(p_v (1 - p_v) + eps)                    if v_i          (the AV step)
    A_i = min(-1, min_{j valid in g} A_j - margin)                   if not v_i
    A_i = all_invalid_advantage   (default -1)                       if g has no valid response

broadcast to every response token, with GRPO's clipped loss (clip 0.2, token-mean, no KL).

Choices the paper leaves open:
- Correctness comes from ``batch.correct``, not ``batch.rewards``, so the statistics do not depend on
  any reward shaping.
- The invalid penalty sits ``invalid_margin`` (default 1.0) below the group's lowest valid advantage
  and never above -1. Being relative, it stays below every valid response in every group (a fixed
  constant such as -3 would not: with one failure among 16 valid responses, the valid-wrong one
  already gets -3.9); the floor of -1 keeps a push away from malformed output even when every valid
  response has A = 0 (all valid ones right, or all wrong).
- A group with no valid response has nothing to compare against, so all of it gets the same
  ``all_invalid_advantage``; -1 keeps pushing away from malformed output, 0 would ignore the group.
"""

import torch

from poise.algorithms.base import group_mean, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "token-mean", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    gid = batch.group_ids
    v = batch.valid.bool()
    c = (batch.correct.bool() & v).float()
    p = group_mean(c, gid, weight=v)
    a_valid = (c - p) / torch.sqrt((p * (1.0 - p)).clamp_min(0.0) + cfg.eps)
    # the lowest valid advantage of each group; +inf marks a group with no valid response
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    lowest = torch.full((n_groups,), torch.inf).scatter_reduce(
        0, gid, torch.where(v, a_valid, torch.inf), "amin")[gid]
    has_valid = torch.isfinite(lowest)
    margin = cfg.get("invalid_margin", 1.0)
    a_invalid = torch.where(has_valid, (lowest - margin).clamp_max(-1.0),
                            torch.full_like(p, cfg.get("all_invalid_advantage", -1.0)))
    return to_tokens(torch.where(v, a_valid, a_invalid), batch.mask)
