"""VM-AV-GRPO: statistics over valid responses, invalid << valid-wrong < valid-correct."""

import dataclasses
import itertools
import math

import pytest
import torch

from poise.algorithms.probe import batch_from, make_probe_batch

from .helpers import assert_ranked_below

EPS = 1e-6


def test_hand_case(advantages):
    # valid-correct, valid-wrong, valid-wrong, invalid: p_v = 1/3 over the three valid responses
    batch = batch_from([1.0, 0.0, 0.0, 0.0], valid=[True, True, True, False])
    a = advantages("vm_av_grpo", batch, eps=EPS)
    sd = math.sqrt(2 / 9 + EPS)
    expected = torch.tensor([(2 / 3) / sd, -(1 / 3) / sd, -(1 / 3) / sd, -(1 / 3) / sd - 1.0])
    torch.testing.assert_close(a, expected)


def test_eps_sits_inside_the_root(advantages):
    batch = batch_from([1.0, 0.0, 0.0, 0.0, 0.0], valid=[True, True, True, True, False])
    a = advantages("vm_av_grpo", batch, eps=0.0625)  # p_v = .25: sqrt(.1875 + .0625) = .5
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5, -1.5]))


@pytest.mark.parametrize("p_valid,G", list(itertools.product((0.3, 0.6, 0.9), (4, 8, 16))))
def test_strict_hierarchy_in_every_group(advantages, p_valid, G):
    for seed in range(15):
        batch = make_probe_batch(num_prompts=6, group_size=G, seed=seed, p_valid=p_valid, shuffle=seed % 2 == 1)
        a, gid = advantages("vm_av_grpo", batch), batch.group_ids
        invalid, wrong, right = ~batch.valid, batch.valid & ~batch.correct, batch.valid & batch.correct
        assert (a[invalid] <= -1.0).all()
        assert_ranked_below(a, gid, invalid, wrong, "invalid < valid-wrong")
        assert_ranked_below(a, gid, invalid, right, "invalid < valid-correct")
        assert_ranked_below(a, gid, wrong, right, "valid-wrong < valid-correct")


@pytest.mark.parametrize("overrides,expected", [({}, -1.0), ({"all_invalid_advantage": 0.0}, 0.0),
                                                 ({"all_invalid_advantage": -2.5}, -2.5)])
def test_group_without_valid_responses(advantages, overrides, expected):
    batch = batch_from([0.0, 0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1, 1], valid=[False, False, False, True, True])
    a = advantages("vm_av_grpo", batch, **overrides)
    assert (a[:3] == expected).all()


def test_invalid_penalty_is_relative_to_the_lowest_valid_advantage(advantages):
    # one failure in 16 valid: valid-wrong A = -sqrt(15) ~ -3.87, so the invalid one must go below that
    batch = batch_from([1.0] * 15 + [0.0, 0.0], valid=[True] * 16 + [False])
    for margin in (1.0, 0.25):
        a = advantages("vm_av_grpo", batch, invalid_margin=margin)
        assert a[16].item() == pytest.approx(a[15].item() - margin, abs=1e-5)
        assert a[15].item() == pytest.approx(-math.sqrt(15), abs=1e-3)


def test_invalid_floor_when_valid_responses_agree(advantages):
    # all valid ones wrong (or all right): their A is 0 and the invalid ones still get -1
    for c, margin in itertools.product((0.0, 1.0), (1.0, 0.25)):
        a = advantages("vm_av_grpo", batch_from([c, c, c, 0.0], valid=[True, True, True, False]),
                       invalid_margin=margin)
        assert torch.equal(a, torch.tensor([0.0, 0.0, 0.0, -1.0]))


def test_invalid_responses_do_not_move_the_valid_statistics(advantages):
    valid_only = batch_from([1.0, 0.0, 0.0, 1.0, 0.0])
    with_invalid = batch_from([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                              valid=[True] * 5 + [False, False])
    torch.testing.assert_close(advantages("vm_av_grpo", with_invalid)[:5], advantages("vm_av_grpo", valid_only))


def test_reads_correctness_not_the_reward(advantages):
    batch = make_probe_batch(seed=4)
    shifted = dataclasses.replace(batch, rewards=batch.rewards * 0.5 - 0.3)
    torch.testing.assert_close(advantages("vm_av_grpo", shifted), advantages("vm_av_grpo", batch))
