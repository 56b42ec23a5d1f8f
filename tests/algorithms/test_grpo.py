"""GRPO: hand-computed values with eps and Bessel's correction pinned (verl parity is in test_verl_parity)."""

import pytest
import torch

from poise.algorithms.probe import batch_from

ONE_OF_FOUR = [1.0, 0.0, 0.0, 0.0]


def test_one_success_in_four(advantages):
    # mean .25; unbiased std = sqrt((.75^2 + 3 * .25^2) / 3) = .5
    a = advantages("grpo", batch_from(ONE_OF_FOUR), eps=1e-6)
    torch.testing.assert_close(a, torch.tensor([1.499997000006, -0.499999000002, -0.499999000002, -0.499999000002]))


def test_two_of_four_uses_bessel(advantages):
    # population std would be .5 and give +-1; Bessel's std is sqrt(1/3) and gives +-0.866
    a = advantages("grpo", batch_from([1.0, 1.0, 0.0, 0.0]), eps=1e-6)
    torch.testing.assert_close(a, torch.tensor([1, 1, -1, -1]) * 0.8660239037870368)


def test_eps_is_read_from_the_config(advantages):
    a = advantages("grpo", batch_from(ONE_OF_FOUR), eps=0.5)
    torch.testing.assert_close(a, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_one_success_in_eight(advantages):
    a = advantages("grpo", batch_from([1.0] + [0.0] * 7), eps=1e-6)
    assert a[0].item() == pytest.approx(2.474866734172715, abs=1e-5)


def test_singleton_group_gets_its_raw_score(advantages):
    # verl's rule: mean 0, std 1 for a group of one
    a = advantages("grpo", batch_from([1.0, 0.3, 1.0, 0.0, 0.0], [7, 2, 2, 9, 9]), eps=1e-6)
    assert a[0].item() == pytest.approx(1.0 / (1 + 1e-6))
