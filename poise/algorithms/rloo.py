"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al., arXiv 2402.14740).

Each response is compared with the mean score of the *other* G - 1 responses to the same prompt:

    A_i = s_i - 1/(G-1) * sum_{j != i} s_j  =  G/(G-1) * (s_i - mean_j s_j)

broadcast to every response token. Leaving the response out makes the baseline independent of s_i, so
the estimate is unbiased, and no std division is applied. A group of one response has no other
response to compare with and gets A = 0, as verl's ``rloo_vectorized`` (verl's loop version ``rloo``
leaves such a response its raw score instead, an inconsistency not copied here).

Choices the paper leaves open: the RLOO paper uses a plain REINFORCE loss with one update per batch;
here, as with ``algorithm.adv_estimator=rloo`` in verl, the advantage feeds PPO's clipped surrogate
(clip 0.2, token-mean), which equals REINFORCE on the first update of each batch (ratio 1). No KL.
"""

from poise.algorithms.base import group_count, group_mean, to_tokens

CONFIG = {"clip_low": 0.2, "clip_high": 0.2, "loss_agg": "token-mean", "kl_coef": 0.0}


def compute_advantages(batch, cfg):
    s = batch.rewards.float()
    n = group_count(batch.group_ids)
    # a group of one is its own mean, so s - mean = 0 there; the clamp only avoids 0/0
    return to_tokens(n / (n - 1).clamp_min(1.0) * (s - group_mean(s, batch.group_ids)), batch.mask)
