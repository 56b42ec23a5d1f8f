import dataclasses

import pytest
import torch

from poise.sandbox.benchmark import evaluate_policy
from poise.sandbox.task import STYLES, style_of


@pytest.mark.parametrize("text,style", [(">15", "direct"), ("21;12;>12", "concise"), ("14+7=21;>21", "verbose"),
                                        ("14+7=21;21-9=12;", "verbose"), ("21;", "concise"), ("", "concise")])
def test_style_of(text, style):
    assert style_of(text) == style


def test_every_response_is_valid_truncated_unanswered_or_malformed(smoke, smoke_policy):
    cfg = dataclasses.replace(smoke.eval, heldout_size=6, samples=4, max_new_tokens=24)  # a tight budget truncates
    m = evaluate_policy(smoke_policy, cfg, seed=0)
    for name, row in m["tiers"].items():
        assert 0 <= row["truncated"] <= 100 and 0 <= row["no_answer"] <= 100
        assert row["validity"] + row["truncated"] + row["no_answer"] <= 100 + 1e-9, name
        shares = row["styles"]
        assert set(shares) <= set(STYLES)
        assert sum(s["share"] for s in shares.values()) == pytest.approx(100)
        # the styles' accuracies, weighted by their shares, are the tier's pass@1
        assert sum(s["share"] * s["accuracy"] for s in shares.values()) / 100 == pytest.approx(row["pass@1"])
    assert any(row["truncated"] > 0 for row in m["tiers"].values())  # 24 tokens cut the long chains


def test_the_evaluation_is_reproducible(smoke, smoke_policy):
    cfg = dataclasses.replace(smoke.eval, heldout_size=4, samples=4)
    assert evaluate_policy(smoke_policy, cfg, seed=3) == evaluate_policy(smoke_policy, cfg, seed=3)
    torch.manual_seed(0)  # the evaluation has its own generator: global RNG state does not matter
    assert evaluate_policy(smoke_policy, cfg, seed=3) == evaluate_policy(smoke_policy, cfg, seed=3)
