"""The synthetic probe batches keep the invariants of real rollouts."""

import itertools

import pytest
import torch

from poise.algorithms.probe import batch_from, make_probe_batch

SETTINGS = [dict(seed=s, group_size=g, max_len=m, p_valid=v, shuffle=sh)
            for s, g, m, v, sh in itertools.product(range(3), (1, 2, 8), (3, 24), (0.2, 0.9), (False, True))]


@pytest.mark.parametrize("kw", SETTINGS)
def test_invariants(kw):
    b = make_probe_batch(num_prompts=8, **kw)
    N, G = 8 * kw["group_size"], kw["group_size"]
    assert b.num_responses == N and b.group_size == G and b.max_len == kw["max_len"]
    assert (b.correct <= b.valid).all(), "correct implies valid"
    assert not (b.truncated & b.valid).any(), "truncated implies invalid"
    assert ((b.lengths == b.max_len) == b.truncated).all()
    assert ((b.lengths >= 1) & (b.lengths <= b.max_len)).all()
    assert torch.equal(b.rewards, b.correct.float())
    assert b.mask.shape == (N, int(b.lengths.max()))
    assert torch.equal(b.mask.sum(1).long(), b.lengths)
    assert torch.equal(b.mask, (torch.arange(b.mask.shape[1]) < b.lengths[:, None]).float())
    for t in (b.old_logp, b.ref_logp, b.entropy):
        assert t.shape == b.mask.shape and (t[b.mask == 0] == 0).all() and torch.isfinite(t).all()
    assert (b.old_logp <= 0).all() and (b.ref_logp <= 0).all() and (b.entropy >= 0).all()
    assert (b.old_logp - b.ref_logp).abs().max() < 0.25
    assert sorted(torch.bincount(b.group_ids).tolist()) == [G] * 8


def test_default_mix_has_every_kind_of_group():
    b = make_probe_batch(seed=0)
    rate = torch.zeros(8).index_add_(0, b.group_ids, b.rewards) / 8
    assert rate[0] == 0 and rate[2] == 1 and 0 < rate[1] < 1 and 0 < rate[3] < 1
    assert (~b.valid).any() and b.truncated.any()
    mixed = b.group_ids == 1
    assert (mixed & b.valid & ~b.correct).any(), "a mixed group has a valid-wrong response"


def test_deterministic_and_seed_dependent():
    a, b, c = make_probe_batch(seed=3), make_probe_batch(seed=3), make_probe_batch(seed=4)
    assert torch.equal(a.old_logp, b.old_logp) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.lengths, c.lengths)


def test_explicit_pass_rates():
    b = make_probe_batch(num_prompts=3, group_size=64, p_correct=[0.0, 1.0, 0.5], p_valid=1.0)
    rate = torch.zeros(3).index_add_(0, b.group_ids, b.rewards) / 64
    assert rate[0] == 0 and rate[1] == 1 and 0.3 < rate[2] < 0.7
    with pytest.raises(ValueError):
        make_probe_batch(num_prompts=3, p_correct=[0.5, 0.5])


def test_shuffle_interleaves_groups():
    b = make_probe_batch(seed=0, shuffle=True)
    assert not torch.equal(b.group_ids, torch.arange(8).repeat_interleave(8))


def test_batch_from_defaults_and_overrides():
    b = batch_from([1.0, 0.0, 0.0], [4, 4, 9], lengths=[2, 16, 5], max_len=16)
    assert b.correct.tolist() == [True, False, False]
    assert b.truncated.tolist() == [False, True, False] and b.valid.tolist() == [True, False, True]
    assert b.group_size == 2 and b.mask.shape == (3, 16)
    b = batch_from([0.0, 1.0], valid=[False, True], truncated=[False, False])
    assert b.valid.tolist() == [False, True] and b.group_ids.tolist() == [0, 0]


def test_rejects_impossible_lengths():
    with pytest.raises(ValueError):
        make_probe_batch(max_len=1)
