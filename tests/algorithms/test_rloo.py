"""RLOO: each response against the mean of the others in its group."""

import torch

from poise.algorithms.probe import batch_from


def test_one_success_in_four(advantages):
    a = advantages("rloo", batch_from([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(a, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))


def test_two_of_four(advantages):
    a = advantages("rloo", batch_from([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(a, torch.tensor([2 / 3, 2 / 3, -2 / 3, -2 / 3]))


def test_equals_score_minus_mean_of_the_others(advantages):
    g = torch.Generator().manual_seed(0)
    gid = torch.tensor([5, 1, 5, 3, 1, 5, 3, 3, 3, 1, 8, 8])
    s = torch.randn(len(gid), generator=g)
    a = advantages("rloo", batch_from(s, gid))
    for i in range(len(s)):
        others = (gid == gid[i]) & (torch.arange(len(s)) != i)
        assert abs(a[i] - (s[i] - s[others].mean())) < 1e-5


def test_singleton_group_gets_zero(advantages):
    a = advantages("rloo", batch_from([1.0, 1.0, 0.0], [4, 0, 0]))
    assert a[0] == 0.0
    torch.testing.assert_close(a[1:], torch.tensor([1.0, -1.0]))
