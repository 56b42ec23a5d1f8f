"""All-fail and all-pass groups carry no signal for the group-baseline estimators."""

import pytest
import torch

from poise.algorithms.probe import batch_from


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "av_grpo"])
@pytest.mark.parametrize("value", [0.0, 1.0, 0.37])
def test_zero_variance_groups_get_zero_advantage(advantages, name, value):
    # group 3 is constant, group 0 mixed: the constant group must stay at exactly 0 either way
    gid = torch.tensor([3, 3, 3, 3, 0, 0, 0, 0])
    rewards = torch.tensor([value] * 4 + [1.0, 0.0, 0.0, 1.0])
    a = advantages(name, batch_from(rewards, gid))
    assert (a[:4] == 0).all(), a
    assert (a[4:] != 0).all()
