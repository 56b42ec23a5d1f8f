"""AV-GRPO: the Bernoulli variance p(1 - p) replaces the group's sample variance."""

import math

import pytest
import torch

from poise.algorithms.probe import batch_from


def test_one_success_in_four(advantages):
    # p = .25, p(1-p) = .1875
    a = advantages("av_grpo", batch_from([1.0, 0.0, 0.0, 0.0]), eps=1e-6)
    torch.testing.assert_close(a, torch.tensor([1.732046188785199] + [-0.5773487295950663] * 3))


def test_one_success_in_eight_is_stronger_than_grpo(advantages):
    batch = batch_from([1.0] + [0.0] * 7)
    av, grpo = advantages("av_grpo", batch, eps=1e-6), advantages("grpo", batch, eps=1e-6)
    assert av[0].item() == pytest.approx(2.6457, abs=1e-4)  # sqrt(7)
    assert grpo[0].item() == pytest.approx(2.4749, abs=1e-4)
    # for binary rewards the two differ exactly by Bessel's factor sqrt(G/(G-1)) (up to eps)
    torch.testing.assert_close(av, grpo * math.sqrt(8 / 7), rtol=1e-4, atol=1e-4)


def test_eps_sits_inside_the_root(advantages):
    a = advantages("av_grpo", batch_from([1.0, 0.0, 0.0, 0.0]), eps=0.0625)
    torch.testing.assert_close(a[0], torch.tensor(0.75 / 0.5))


def test_bounded_by_population_std_for_rewards_in_unit_interval(advantages):
    # Bhatia-Davis: var <= p(1-p) on [0, 1], so |A_av| <= |s - p| / population std
    g = torch.Generator().manual_seed(0)
    gid = torch.arange(20).repeat_interleave(6)
    s = torch.rand(len(gid), generator=g) ** 2
    a = advantages("av_grpo", batch_from(s, gid), eps=0.0)
    centred = s - s.view(20, 6).mean(1).repeat_interleave(6)
    pop_std = s.view(20, 6).std(1, unbiased=False).repeat_interleave(6)
    assert (a.abs() <= centred.abs() / pop_std + 1e-5).all()
    assert (a.abs() < centred.abs() / pop_std - 1e-3).any(), "p(1-p) is a strict bound for non-binary rewards"


def test_rewards_outside_unit_interval_stay_finite(advantages):
    # group means 1.75 and -0.6: p(1-p) < 0 there, clamped to 0
    a = advantages("av_grpo", batch_from([1.5, 2.0, -1.0, -0.2], [0, 0, 1, 1]))
    assert torch.isfinite(a).all()
    assert (a[[0, 2]] < 0).all() and (a[[1, 3]] > 0).all()
