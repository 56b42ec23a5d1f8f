"""AV-GRPO: group advantages scaled by the analytic Bernoulli variance (POISE, arXiv 2603.23951).

With p_g the group's mean reward (its pass rate, for binary rewards):

    A_i = (s_i - p_g) / sqrt(p_g * (1 - p_g) + eps)

broadcast to every response token, with GRPO's clipped loss (clip 0.2, token-mean, no KL).

For a binary reward the group's scores are Bernoulli(p_g) draws, whose variance is exactly
p_g(1 - p_g). Using it replaces GRPO's Bessel-corrected sample std, which for 0/1 scores is the same
quantity inflated by sqrt(G/(G-1)) plus an eps outside the root; the rare outcome therefore gets a
slightly stronger push: one success in eight gets A = 2.65 here against GRPO's 2.47.

For rewards in [0, 1] that are not binary, p(1 - p) is the Bhatia-Davis upper bound on the variance
of a variable with mean p on [0, 1], so the normaliser is never smaller than the true std and stays
safe. Rewards outside [0, 1] (a shaped reward, say) can make p(1 - p) negative; it is clamped at 0, so
the advantage stays finite, but then the scale means little.

All-fail and all-pass groups (p_g = 0 or 1) get A = 0: s_i - p_g = 0 exactly. So does a group of one
response. The paper does not say which estimate of p it uses; this is the plainest reading, the
group's own mean, not a smoothed (k + a)/(G + a + b) or a running per-prompt estimate.
"""

import torch

from poise.algorithms.base import group_mean, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "token-mean", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    s = batch.rewards.float()
    p = group_mean(s, batch.group_ids)
    var = (p * (1.0 - p)).clamp_min(0.0)
    return to_tokens((s - p) / torch.sqrt(var + cfg.eps), batch.mask)
