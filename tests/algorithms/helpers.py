"""Helpers for the algorithm tests: apply an algorithm the way the trainer does."""

import dataclasses

import torch

from poise.algorithms import AlgoConfig


def config_with(alg, **overrides) -> AlgoConfig:
    """The algorithm's own CONFIG with some knobs replaced (unknown knobs go to cfg.extra)."""
    d = dataclasses.asdict(alg.config)
    d.update(d.pop("extra"))
    d.update(overrides)
    return AlgoConfig.from_dict(d)


def run(alg, batch, **overrides) -> torch.Tensor:
    """Token advantages [N, T]: shape the rewards first if the algorithm shapes, as the trainer does."""
    cfg = config_with(alg, **overrides)
    if alg.shape_rewards is not None:
        batch = dataclasses.replace(batch, rewards=alg.shape_rewards(batch, cfg))
    return alg.compute_advantages(batch, cfg)


def per_response(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] token advantages -> [N], their mean over each response's tokens."""
    return (adv * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def group_min(values: torch.Tensor, group_ids: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Per group (indexed by group id), the smallest of ``values`` over rows ``where``; +inf if none."""
    n = int(group_ids.max()) + 1
    v = torch.where(where, values, torch.inf)
    return torch.full((n,), torch.inf).scatter_reduce(0, group_ids, v, "amin")


def group_max(values: torch.Tensor, group_ids: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Per group, the largest of ``values`` over rows ``where``; -inf if none."""
    return -group_min(-values, group_ids, where)


def assert_ranked_below(values, group_ids, low, high, what=""):
    """In every group that has rows of both kinds, every ``low`` row is strictly below every ``high`` row.
    Returns how many groups were compared."""
    top_low, bottom_high = group_max(values, group_ids, low), group_min(values, group_ids, high)
    both = torch.isfinite(top_low) & torch.isfinite(bottom_high)
    bad = both & ~(top_low < bottom_high)
    assert not bad.any(), f"{what}: groups {bad.nonzero().flatten().tolist()} out of order"
    return int(both.sum())
