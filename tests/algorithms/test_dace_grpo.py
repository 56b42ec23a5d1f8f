"""DACE-GRPO: a pass-rate-gated, zero-mean length term for correct responses only."""

import math

import pytest
import torch

from poise.algorithms.probe import batch_from, make_probe_batch

SEEDS = range(10)


def length_term(advantages, batch, **overrides):
    return advantages("dace_grpo", batch, **overrides) - advantages("grpo", batch)


@pytest.mark.parametrize("G", [4, 8, 16])
def test_no_length_term_for_wrong_or_invalid(advantages, G):
    for seed in SEEDS:
        batch = make_probe_batch(seed=seed, group_size=G, p_valid=0.6)
        term = length_term(advantages, batch)
        assert (term[~batch.correct] == 0).all()
        assert (term[batch.correct] != 0).any()


@pytest.mark.parametrize("G", [4, 8, 16])
def test_length_term_is_zero_mean_among_the_correct(advantages, G):
    for seed in SEEDS:
        batch = make_probe_batch(seed=seed, group_size=G, shuffle=True)
        term = length_term(advantages, batch)
        per_group = torch.zeros(8).index_add_(0, batch.group_ids, term * batch.correct)
        assert per_group.abs().max() < 1e-4


@pytest.mark.parametrize("G", [4, 8, 16])
def test_shorter_correct_beats_longer_correct(advantages, G):
    for seed in SEEDS:
        batch = make_probe_batch(seed=seed, group_size=G)
        a, gid, c, L = advantages("dace_grpo", batch), batch.group_ids, batch.correct, batch.lengths
        # every pair (i, j) of correct responses in one group with L_i < L_j
        pairs = (gid[:, None] == gid[None]) & c[:, None] & c[None] & (L[:, None] < L[None])
        assert pairs.any()
        assert (a[:, None] > a[None])[pairs].all()


def test_hand_case(advantages):
    # correct lengths 4 and 8 (mean 6, unbiased std 2*sqrt(2)), pass rate 1/2, lambda .2
    batch = batch_from([1.0, 1.0, 0.0, 0.0], lengths=[4, 8, 3, 9])
    term = length_term(advantages, batch, eps=1e-9)
    z = 2 / (2 * math.sqrt(2))
    torch.testing.assert_close(term, torch.tensor([0.2 * 0.5 * z, -0.2 * 0.5 * z, 0.0, 0.0]))


def test_gate_scales_with_the_pass_rate(advantages):
    # the same two correct lengths, pass rates 2/8 and 2/4: the term doubles
    rewards = [1.0, 1.0] + [0.0] * 6 + [1.0, 1.0, 0.0, 0.0]
    lengths = [4, 8] + [5] * 6 + [4, 8, 5, 5]
    batch = batch_from(rewards, [0] * 8 + [1] * 4, lengths=lengths, max_len=20)
    term = length_term(advantages, batch, length_coef=0.3)
    assert term[8].item() == pytest.approx(2 * term[0].item(), rel=1e-4)
    assert term[0] > 0 > term[1]


def test_fewer_than_two_correct_or_equal_lengths_give_no_term(advantages):
    batch = batch_from([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [0, 0, 0, 1, 1, 1], lengths=[3, 9, 5, 7, 7, 2])
    assert (length_term(advantages, batch) == 0).all()


def test_zero_coefficient_is_grpo(advantages):
    batch = make_probe_batch(seed=9)
    torch.testing.assert_close(advantages("dace_grpo", batch, length_coef=0.0), advantages("grpo", batch))


def test_singleton_groups_follow_grpo(advantages):
    batch = batch_from([1.0, 0.0, 1.0, 0.0, 1.0], [3, 5, 0, 0, 0], lengths=[4, 6, 2, 3, 7])
    torch.testing.assert_close(advantages("dace_grpo", batch)[:2], advantages("grpo", batch)[:2])


def test_zero_spread_gives_no_term_even_with_eps_zero(advantages):
    # one correct response, and two correct of equal length: no spread among C, so nothing to divide
    batch = batch_from([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [0, 0, 0, 1, 1, 1], lengths=[3, 9, 5, 7, 7, 2])
    a = advantages("dace_grpo", batch, eps=0.0)
    torch.testing.assert_close(a, advantages("grpo", batch, eps=0.0))
