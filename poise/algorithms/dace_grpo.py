"""DACE-GRPO: GRPO plus a length term for correct answers, gated by the group's pass rate (POISE).

The steered discovery of the POISE paper (arXiv 2603.23951): asked for accurate *and* concise
reasoning, the loop found a correctness-first efficiency shaping. For a group g with pass rate p_g,
correct set C and response lengths L_i (tokens, end token included):

    A_i = A_i^GRPO + lambda * g(p_g) * c_i * (mean_{j in C} L_j - L_i) / (std_{j in C} L_j + eps)

    A_i^GRPO = (s_i - mean_g s) / (std_g s + eps)        as in grpo.py
    g(p) = p                                              the gate
    lambda = length_coef (default 0.2)

Why each piece:
- Only correct responses (c_i = 1) get a length term, so the policy is never pushed to be short and
  wrong; wrong and invalid responses keep their plain GRPO advantage.
- The term is a z-score within C, so it sums to zero over the correct responses: it reorders them
  (shorter above longer) without moving them, on average, relative to the wrong ones.
- The gate g(p) = p compresses easy prompts hard and leaves hard prompts (p near 0) to the accuracy
  signal alone, so length pressure does not cost accuracy where accuracy is scarce.
- With |C| < 2 there is nothing to compare: the std over C (Bessel-corrected, as in GRPO) is 0 there,
  as it is when all correct lengths are equal, and a zero spread gives no term.

Choices the paper leaves open: the gate (p, rather than a threshold 1[p >= 0.5] or a ramp), lambda
(0.2: a fraction of the correctness signal, not a rival to it), lengths in tokens, the unbiased std.
Since |z| <= (|C|-1)/sqrt(|C|) for a z-score over |C| values, the term is at most
lambda * (|C|-1)/sqrt(|C|); with binary rewards GRPO's correct-minus-wrong gap is at least
2 sqrt((G-1)/G), so with lambda = 0.2 a correct answer outranks every wrong one in its group for any
group size up to about 100.
"""

import torch

from poise.algorithms.base import group_count, group_mean, group_std, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "token-mean", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    gid, s = batch.group_ids, batch.rewards.float()
    single = group_count(gid) < 2
    mean = torch.where(single, torch.zeros_like(s), group_mean(s, gid))
    std = torch.where(single, torch.ones_like(s), group_std(s, gid, unbiased=True))
    adv = (s - mean) / (std + cfg.eps)
    c = batch.correct.float()
    L = batch.lengths.float()
    sd = group_std(L, gid, unbiased=True, weight=c)
    # sd == 0 leaves nothing to rank; testing it, rather than leaning on eps, keeps eps = 0 NaN-free
    z = torch.where(sd > 0, (group_mean(L, gid, weight=c) - L) / (sd + cfg.eps), torch.zeros_like(L))
    lam = cfg.get("length_coef", 0.2)
    return to_tokens(adv + lam * group_mean(c, gid) * c * z, batch.mask)
