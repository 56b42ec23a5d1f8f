import math

from poise.backends.tiny import EvalResult, evaluate, evaluate_start
from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation
from poise.algorithms import load_algorithm


def test_builtin_evaluates_in_a_child_process_and_streams_steps(smoke, smoke_policy):
    steps = []
    res = run_evaluation(AlgorithmSpec("grpo"), "smoke", 0, threads=1, on_step=lambda i, row: steps.append(i))
    assert isinstance(res, EvalResult), res
    assert steps == list(range(smoke.rl.steps))
    assert len(res.trajectory) == smoke.rl.steps
    assert set(res.metrics["tiers"]) == {"aime24", "aime25", "amc", "math500", "minerva", "olympiad"}
    assert math.isfinite(res.metrics["overall"])


def test_child_result_equals_in_process_result(smoke, smoke_policy):
    # the child must compute exactly what evaluate() computes: same seed, same numbers
    child = run_evaluation(AlgorithmSpec("rloo"), "smoke", 1, threads=2)
    here = evaluate(load_algorithm("rloo"), "smoke", 1)
    strip = lambda t: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in t]
    assert strip(child.trajectory) == strip(here.trajectory)
    assert child.metrics == here.metrics


def test_a_syntax_error_is_a_load_failure_naming_the_line(smoke_policy):
    res = run_evaluation(AlgorithmSpec("bad", "def compute_advantages(batch, cfg)\n    return 1\n", "/x/bad.py"), "smoke", 0)
    assert isinstance(res, EvalFailure) and res.kind == "load"
    assert "/x/bad.py" in res.message and "line 1" in res.message


def test_a_search_candidate_cannot_buy_rollouts_by_telling_its_loads_apart(smoke_policy):
    # the verifier loads a candidate under another module name than the worker does: a CONFIG that reads its own
    # name can show the verifier a fixed budget and the trainer dynamic sampling, so the worker checks what it loaded
    from poise.algorithms.base import FIXED_BUDGET
    from poise.verify.static import static_check
    src = ("from poise.algorithms.base import group_mean, to_tokens\n"
           "CONFIG = {'dynamic_sampling': 3 if __name__[-2:] == 'c7' else 0}\n"
           "def compute_advantages(batch, cfg):\n"
           "    r = batch.rewards.float()\n"
           "    return to_tokens(r - group_mean(r, batch.group_ids), batch.mask)\n")
    assert static_check(src, "x").ok  # the lint lets it through: the worker is the check
    res = run_evaluation(AlgorithmSpec("c7", src, "archive:#7", fixed_budget=True), "smoke", 0, threads=1)
    assert isinstance(res, EvalFailure) and res.kind == "load" and res.message == FIXED_BUDGET


def test_a_crash_inside_the_candidate_is_a_candidate_failure(smoke_policy):
    src = "def compute_advantages(batch, cfg):\n    raise RuntimeError('boom')\n"
    res = run_evaluation(AlgorithmSpec("boom", src, "/x/boom.py"), "smoke", 0)
    assert isinstance(res, EvalFailure) and res.kind == "candidate"
    assert "RuntimeError: boom" in res.message and "line 2" in res.message


def test_a_child_that_dies_is_reported_not_hung(smoke_policy):
    src = "import os\ndef compute_advantages(batch, cfg):\n    os._exit(7)\n"
    res = run_evaluation(AlgorithmSpec("die", src, "/x/die.py"), "smoke", 0)
    assert isinstance(res, EvalFailure) and res.kind == "candidate" and "exit code 7" in res.message
    assert "compute_advantages ended the hook process" in res.message


def test_the_sft_start_scores_are_those_of_the_cached_policy(smoke, smoke_policy):
    a, b = evaluate_start(smoke, 0), evaluate_start(smoke, 0)
    assert a.metrics == b.metrics and a.trajectory == []


def test_a_child_over_its_time_limit_is_stopped(smoke_policy):
    src = "import time\ndef compute_advantages(batch, cfg):\n    time.sleep(60)\n"
    res = run_evaluation(AlgorithmSpec("slow", src, "/x/slow.py"), "smoke", 0, timeout_s=10)
    assert isinstance(res, EvalFailure) and res.kind == "timeout"
