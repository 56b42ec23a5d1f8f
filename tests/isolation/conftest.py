import pytest

from tests.isolation.hostile import require_jail


@pytest.fixture(scope="session")
def jail():
    require_jail()


@pytest.fixture(scope="session")
def grpo_smoke(jail, smoke_policy):
    """GRPO at smoke fidelity, seed 0, one thread, through its hook process: the untampered score."""
    from poise.backends.worker import AlgorithmSpec, run_evaluation
    res = run_evaluation(AlgorithmSpec("grpo"), "smoke", 0, threads=1)
    assert not hasattr(res, "kind"), res
    return res


def evaluate_source(source: str, name: str = "hostile"):
    """What the discovery loop's and `poise train`'s evaluator does with a candidate (no lint in front)."""
    from poise.backends.worker import AlgorithmSpec, run_evaluation
    return run_evaluation(AlgorithmSpec(name, source, f"{name}.py"), "smoke", 0, threads=1, timeout_s=300)
