"""DAPO: clip-higher, token-mean loss, soft overlong punishment."""

import dataclasses

import pytest
import torch

from poise.algorithms.base import AlgoConfig, ppo_clip_loss
from poise.algorithms.probe import batch_from, make_probe_batch

from .helpers import config_with, run


def test_config(algos):
    cfg = algos["dapo"].config
    assert (cfg.clip_low, cfg.clip_high, cfg.loss_agg) == (0.2, 0.28, "token-mean")
    assert "shape_rewards" in algos["dapo"].hooks


def shaped(alg, batch, **overrides):
    return alg.shape_rewards(batch, config_with(alg, **overrides))


def test_overlong_penalty_at_the_boundaries(algos):
    # L_max = 20, default L_c = 20 // 4 = 5: the ramp starts after 15 tokens
    lengths = [3, 15, 16, 18, 19, 20, 20]
    truncated = [False, False, False, False, False, False, True]
    batch = batch_from([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0], lengths=lengths, truncated=truncated, max_len=20)
    expected = torch.tensor([1.0, 1.0, 1 - 0.2, 0 - 0.6, 1 - 0.8, 1 - 1.0, 0 - 1.0])
    torch.testing.assert_close(shaped(algos["dapo"], batch), expected)


def test_overlong_cache_is_configurable(algos):
    batch = batch_from([1.0, 1.0, 1.0], lengths=[16, 17, 19], max_len=20)
    torch.testing.assert_close(shaped(algos["dapo"], batch, overlong_cache=4), torch.tensor([1.0, 0.75, 0.25]))


def test_tiny_budget_keeps_a_cache_of_one_token(algos):
    # 3 // 4 = 0 -> L_c = 1; the second response ended exactly at the budget (not truncated)
    batch = batch_from([1.0, 1.0], lengths=[2, 3], truncated=[False, False], max_len=3)
    torch.testing.assert_close(shaped(algos["dapo"], batch), torch.tensor([1.0, 0.0]))


def test_truncated_gets_minus_one_whatever_its_length(algos):
    batch = batch_from([0.0, 0.0], lengths=[5, 5], truncated=[True, False], max_len=20)
    torch.testing.assert_close(shaped(algos["dapo"], batch), torch.tensor([-1.0, 0.0]))


def test_advantages_are_grpo_of_the_shaped_rewards(algos):
    batch = make_probe_batch(seed=2, max_len=16)
    r = shaped(algos["dapo"], batch)
    assert not torch.equal(r, batch.rewards), "the probe should have some long responses"
    grpo = algos["grpo"].compute_advantages(dataclasses.replace(batch, rewards=r), AlgoConfig())
    torch.testing.assert_close(run(algos["dapo"], batch), grpo)


def test_long_correct_ranks_below_short_correct(algos):
    batch = batch_from([1.0, 1.0, 0.0, 0.0], lengths=[4, 18, 4, 6], max_len=20)
    a = run(algos["dapo"], batch)[:, 0]
    assert a[0] > a[1] > a[2] == a[3]


@pytest.mark.parametrize("ratio,clipped_by_grpo,clipped_by_dapo", [(1.25, True, False), (1.3, True, True)])
def test_clip_higher(algos, ratio, clipped_by_grpo, clipped_by_dapo):
    lp, old = torch.full((1, 1), ratio).log(), torch.zeros(1, 1)
    adv, mask = torch.ones(1, 1), torch.ones(1, 1)
    for name, want in (("grpo", clipped_by_grpo), ("dapo", clipped_by_dapo)):
        cfg = algos[name].config
        _, m = ppo_clip_loss(lp, old, adv, mask, cfg.clip_low, cfg.clip_high)
        assert (m["clip_frac"] > 0) == want, name
