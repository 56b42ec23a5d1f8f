"""The shared building blocks in poise.algorithms.base."""

import pytest
import torch

from poise.algorithms.base import (LOSS_AGG_MODES, AlgoConfig, aggregate, group_count, group_mean, group_std,
                                   kl_penalty, ppo_clip_loss, to_tokens)
from poise.algorithms.probe import make_probe_batch

LENGTHS = [1, 6, 3, 2]


def ragged():
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(6)[None] < torch.tensor(LENGTHS)[:, None]).float()
    loss = torch.randn(4, 6, generator=g)
    loss = torch.where(mask.bool(), loss, torch.full_like(loss, 1e6))  # padding must never leak in
    return loss, mask


def by_hand(loss, mode, norm_len=None):
    rows = [loss[i, :n].tolist() for i, n in enumerate(LENGTHS)]
    every = [x for r in rows for x in r]
    if mode == "token-mean":
        return sum(every) / len(every)
    if mode == "token-sum":
        return sum(every)
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / len(rows)
    return sum(every) / (len(rows) * (norm_len or loss.shape[1]))


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_matches_formula_on_ragged_masks(mode):
    loss, mask = ragged()
    assert aggregate(loss, mask, mode).item() == pytest.approx(by_hand(loss, mode), rel=1e-5)


def test_seq_mean_token_sum_norm_uses_the_given_constant():
    loss, mask = ragged()
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm_len=24).item() == pytest.approx(
        by_hand(loss, "seq-mean-token-sum-norm", 24), rel=1e-5)


def test_aggregate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(*ragged(), "mean")


@pytest.mark.parametrize("mode,weight", [("token-mean", lambda n: 1 / sum(LENGTHS)),
                                         ("seq-mean-token-mean", lambda n: 1 / (len(LENGTHS) * n)),
                                         ("token-sum", lambda n: 1.0)])
def test_ppo_gradient_at_ratio_one_is_minus_advantage(mode, weight):
    _, mask = ragged()
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(4, 6, generator=g)
    adv = torch.randn(4, 1, generator=g).expand(4, 6) * mask
    logp = old.clone().requires_grad_(True)
    loss, m = ppo_clip_loss(logp, old, adv, mask, agg=mode)
    loss.backward()
    w = torch.tensor([weight(n) for n in LENGTHS])[:, None]
    torch.testing.assert_close(logp.grad, -adv * mask * w)
    assert m["clip_frac"] == 0.0


def one_token(ratio, adv, clip_low=0.2, clip_high=0.2):
    logp = torch.tensor([[float(ratio)]]).log().requires_grad_(True)
    loss, m = ppo_clip_loss(logp, torch.zeros(1, 1), torch.tensor([[float(adv)]]), torch.ones(1, 1),
                            clip_low, clip_high)
    loss.backward()
    return m["clip_frac"], logp.grad.item()


@pytest.mark.parametrize("ratio,adv", [(1.5, 1.0), (0.5, -1.0), (1.21, 2.0), (0.79, -0.1)])
def test_clip_frac_counts_ratios_pushed_past_the_range_with_the_advantage(ratio, adv):
    frac, grad = one_token(ratio, adv)
    assert frac == 1.0
    assert grad == 0.0, "a clipped token carries no gradient"


@pytest.mark.parametrize("ratio,adv", [(0.5, 1.0), (1.5, -1.0), (1.19, 1.0), (1.0, 3.0)])
def test_clip_frac_ignores_ratios_inside_or_against_the_advantage(ratio, adv):
    frac, grad = one_token(ratio, adv)
    assert frac == 0.0
    assert grad == pytest.approx(-adv * ratio)


def test_clip_frac_is_a_fraction_of_response_tokens():
    logp = torch.tensor([[1.5, 1.0, 1.5, 9.0]]).log()
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    _, m = ppo_clip_loss(logp, torch.zeros(1, 4), torch.ones(1, 4), mask)
    assert m["clip_frac"] == pytest.approx(2 / 3)


def test_clip_range_is_asymmetric():
    assert one_token(1.25, 1.0, clip_high=0.28)[0] == 0.0
    assert one_token(0.75, -1.0, clip_high=0.28)[0] == 1.0


def test_kl_k3_non_negative_and_zero_on_the_reference():
    b = make_probe_batch(seed=0)
    k3 = kl_penalty(b.old_logp, b.ref_logp, "k3")
    assert (k3 >= 0).all() and (k3 * b.mask).sum() > 0
    assert (kl_penalty(b.old_logp, b.old_logp, "k3") == 0).all()
    d = torch.tensor([-30.0, -1.0, 0.5, 30.0])
    k = kl_penalty(torch.zeros(4), d, "k3")
    assert (k >= 0).all() and (k <= 10).all() and torch.isfinite(k).all()
    torch.testing.assert_close(k[1:3], torch.exp(d[1:3]) - d[1:3] - 1)


def test_kl_k1_k2_and_unknown():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), torch.tensor([0.125, 0.5]))
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(logp, ref, "k4")


GIDS = torch.tensor([7, 2, 7, 2, 2, 11, 7])
X = torch.tensor([1.0, 4.0, 3.0, -2.0, 1.0, 5.0, 8.0])


def by_group(fn):
    return torch.tensor([fn(X[GIDS == g]) for g in GIDS])


def test_group_mean_and_std_with_non_contiguous_ids():
    torch.testing.assert_close(group_mean(X, GIDS), by_group(lambda v: v.mean()))
    torch.testing.assert_close(group_std(X, GIDS, unbiased=False), by_group(lambda v: v.std(unbiased=False)))
    unbiased = group_std(X, GIDS)
    torch.testing.assert_close(unbiased, by_group(lambda v: v.std() if len(v) > 1 else 0.0))
    assert unbiased[5] == 0.0, "a singleton has no unbiased std: 0, not NaN"
    torch.testing.assert_close(group_count(GIDS), by_group(lambda v: float(len(v))))


def test_weighted_group_statistics():
    w = torch.tensor([1, 1, 0, 0, 1, 0, 1])
    torch.testing.assert_close(group_mean(X, GIDS, weight=w), torch.tensor([4.5, 2.5, 4.5, 2.5, 2.5, 0.0, 4.5]))
    torch.testing.assert_close(group_count(GIDS, weight=w), torch.tensor([2.0, 2, 2, 2, 2, 0, 2]))
    sd = group_std(X, GIDS, weight=w)
    assert sd[0].item() == pytest.approx(torch.tensor([1.0, 8.0]).std().item())
    assert sd[5] == 0.0


def test_to_tokens_broadcasts_and_masks():
    _, mask = ragged()
    out = to_tokens(torch.tensor([1.0, -2.0, 3.0, 0.5]), mask)
    assert out.shape == mask.shape
    torch.testing.assert_close(out.sum(1), torch.tensor([1.0, -12.0, 9.0, 1.0]))


def test_select_keeps_group_ids_and_clone_is_independent():
    b = make_probe_batch(seed=0)
    sub = b.select(torch.tensor([9, 3]))
    assert sub.group_ids.tolist() == [1, 0] and sub.group_size == b.group_size
    c = b.clone()
    c.rewards += 1
    assert not torch.equal(c.rewards, b.rewards)


def test_config_from_dict_routes_unknown_keys_to_extra():
    cfg = AlgoConfig.from_dict({"clip_high": 0.3, "length_coef": 0.1, "extra": {"margin": 2}})
    assert cfg.clip_high == 0.3 and cfg.get("length_coef") == 0.1 and cfg.get("margin") == 2
    assert cfg.get("missing", 5) == 5
    for bad in ({"loss_agg": "mean"}, {"kl_type": "k9"}, {"clip_low": 1.0}):
        with pytest.raises(ValueError):
            AlgoConfig.from_dict(bad)
