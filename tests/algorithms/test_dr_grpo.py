"""Dr. GRPO: mean-centred advantages, constant loss normaliser."""

import dataclasses

import torch

from poise.algorithms.base import AlgoConfig
from poise.algorithms.probe import batch_from, make_probe_batch

from .helpers import run


def test_one_success_in_four(advantages):
    a = advantages("dr_grpo", batch_from([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(a, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_no_std_division(advantages):
    # GRPO would scale these by 1/std; Dr. GRPO leaves rewards' own scale
    a = advantages("dr_grpo", batch_from([3.0, 1.0, 0.5, 0.5, 2.0, 2.0], [0, 0, 1, 1, 2, 2]))
    torch.testing.assert_close(a, torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0, 0.0]))


def test_config_uses_constant_normaliser(algos):
    assert algos["dr_grpo"].config.loss_agg == "seq-mean-token-sum-norm"


def test_loss_is_normalised_by_the_generation_budget_not_the_longest_response(algos):
    alg = algos["dr_grpo"]
    batch = make_probe_batch(seed=1, max_len=40)
    adv = run(alg, batch)
    logp = batch.old_logp.clone().requires_grad_(True)
    loss, _ = alg.compute_policy_loss(logp, batch, adv, alg.config)
    # at ratio 1 the surrogate is -A per token; Dr. GRPO divides the token sum by N * L_max
    expected = -(adv * batch.mask).sum() / (batch.num_responses * batch.max_len)
    torch.testing.assert_close(loss, expected)
    # more padding columns (a larger T) must not change it
    padded = dataclasses.replace(batch, **{k: torch.nn.functional.pad(getattr(batch, k), (0, 7))
                                           for k in ("mask", "old_logp", "ref_logp", "entropy")})
    adv_p = torch.nn.functional.pad(adv, (0, 7))
    loss_p, _ = alg.compute_policy_loss(padded.old_logp, padded, adv_p, alg.config)
    torch.testing.assert_close(loss_p, loss)
    token_mean, _ = alg.compute_policy_loss(logp, batch, adv, AlgoConfig(loss_agg="token-mean"))
    assert not torch.allclose(token_mean, loss)
