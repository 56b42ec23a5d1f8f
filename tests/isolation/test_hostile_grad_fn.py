"""Class: reaching the live policy through autograd. compute_policy_loss gets a leaf copy of the
log-probs in another process: there is no graph to walk, and its gradient reaches the policy only as
the numbers the trainer applies."""

import pytest

from poise.algorithms import builtin_source
from poise.verify import static_check
from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import call_hook, curves

pytestmark = pytest.mark.usefixtures("jail")

LOSS = '''
from poise.algorithms.base import ppo_clip_loss

def compute_policy_loss(logp, batch, advantages, cfg):
{walk}
    return ppo_clip_loss(logp, batch.old_logp, advantages, batch.mask, cfg.clip_low, 0.28, cfg.loss_agg)
'''
# walks the graph behind logp to every parameter it can find and scales it; passes the lint
WALK = '''    seen, todo = [], [logp.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None:
            continue
        if hasattr(fn, "variable"):
            with torch.no_grad():
                fn.variable.mul_(0.0)
            seen.append(fn)
        todo.extend(f for f, _ in fn.next_functions)
    if logp.grad_fn is not None or logp.requires_grad is False:
        raise RuntimeError("a graph reached the hook process")
'''


def source(walk: str) -> str:
    return builtin_source("grpo") + LOSS.format(walk=walk)


def test_the_walk_passes_the_lint_so_only_the_process_boundary_stops_it():
    assert static_check(source(WALK)).ok


def test_the_loss_sees_a_leaf_with_no_graph_and_training_is_untouched():
    honest = evaluate_source(source("    pass"), "honest")
    walked = evaluate_source(source(WALK), "walker")
    assert not hasattr(walked, "kind"), walked  # the check inside raised nothing: logp was a bare leaf
    assert walked.metrics == honest.metrics and curves(walked) == curves(honest)
    assert walked.metrics["overall"] > 0 and walked.info["hook_calls"] > 0


def test_a_probe_call_sees_no_graph_either():
    res = call_hook(source(WALK))
    assert not isinstance(res, Exception), res
