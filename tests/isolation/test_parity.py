"""The split changes nothing but the trust: a candidate that is a built-in, run through its jailed hook
process, gives the numbers of the built-in run in the worker itself, bit for bit (same seed, same
threads), including a custom policy loss applied through the value-and-gradient surrogate."""

import pytest

from poise.algorithms import algorithm_from_source, builtin_source
from poise.backends.tiny import evaluate
from poise.backends.worker import AlgorithmSpec, run_evaluation
from tests.isolation.hostile import curves

pytestmark = pytest.mark.usefixtures("jail")


@pytest.mark.parametrize("name", ["grpo", "dapo"])  # dapo: reward shaping too
def test_a_copy_of_a_builtin_through_the_jail_is_bit_identical(name, smoke_policy):
    here = run_evaluation(AlgorithmSpec(name, in_process=True), "smoke", 0, threads=2)
    jailed = run_evaluation(AlgorithmSpec(f"copy_of_{name}", builtin_source(name), f"copy_of_{name}.py"), "smoke",
                            0, threads=2)
    assert here.info["isolation"] == ["in-process"] and "bubblewrap" in jailed.info["isolation"]
    assert curves(jailed) == curves(here) and jailed.metrics == here.metrics
    assert jailed.info["hook_calls"] >= len(jailed.trajectory)


def test_only_a_builtin_may_run_in_process(smoke_policy):
    res = run_evaluation(AlgorithmSpec("sneaky", builtin_source("grpo"), "sneaky.py", in_process=True), "smoke", 0)
    assert res.kind == "internal" and "only a built-in may run in process" in res.message


LOSS = builtin_source("grpo").replace('"kl_coef": 0.0}', '"kl_coef": 0.05, "entropy_coef": 0.01}') + '''
from poise.algorithms.base import ppo_clip_loss


def compute_policy_loss(logp, batch, advantages, cfg):
    loss, info = ppo_clip_loss(logp, batch.old_logp, advantages, batch.mask, cfg.clip_low, cfg.clip_high,
                               "seq-mean-token-mean")
    return loss + 0.1 * (logp * batch.mask).pow(2).mean(), info
'''


def test_a_custom_loss_through_the_surrogate_is_bit_identical(smoke_policy):
    # the trainer's KL and entropy terms add their gradients to the surrogate's, as they would to the loss
    here = evaluate(algorithm_from_source(LOSS, "loss", "loss.py"), "smoke", 0)
    jailed = run_evaluation(AlgorithmSpec("loss", LOSS, "loss.py"), "smoke", 0, threads=2)
    assert "compute_policy_loss" in jailed.info["hooks"]
    assert curves(jailed) == curves(here) and jailed.metrics == here.metrics
    assert jailed.info["hook_calls"] > 2 * len(jailed.trajectory)  # advantages, and the loss per mini-batch
