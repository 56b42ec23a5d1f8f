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


def test_length_of_right_and_wrong_answers_recombines_into_the_mean_length(smoke, smoke_policy):
    cfg = dataclasses.replace(smoke.eval, heldout_size=6, samples=4)
    m = evaluate_policy(smoke_policy, cfg, seed=0)
    seen = set()
    for name, row in m["tiers"].items():
        n = row["problems"] * (1 if row["metric"] == "greedy" else row["samples"])
        right = round(row["pass@1"] / 100 * n)
        seen |= {k for k in ("length_correct", "length_wrong") if k in row}
        assert ("length_correct" in row) == (right > 0) and ("length_wrong" in row) == (right < n), name
        total = row.get("length_correct", 0) * right + row.get("length_wrong", 0) * (n - right)
        assert total / n == pytest.approx(row["length"]), name
    assert seen == {"length_correct", "length_wrong"}  # the smoke policy gets some right and some wrong


def test_the_evaluation_is_reproducible(smoke, smoke_policy):
    cfg = dataclasses.replace(smoke.eval, heldout_size=4, samples=4)
    assert evaluate_policy(smoke_policy, cfg, seed=3) == evaluate_policy(smoke_policy, cfg, seed=3)
    torch.manual_seed(0)  # the evaluation has its own generator: global RNG state does not matter
    assert evaluate_policy(smoke_policy, cfg, seed=3) == evaluate_policy(smoke_policy, cfg, seed=3)
