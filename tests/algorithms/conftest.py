import pytest
import torch

from poise.algorithms import BUILTINS, load_algorithm

from .helpers import per_response, run


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """These tensors are tiny; with a second OpenMP thread every op waits at a barrier, which costs ~1000x
    when another process holds the other core (torch.log on 128x24: 7 ms instead of 2 us)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def algos():
    """Every built-in, loaded once."""
    return {name: load_algorithm(name) for name in BUILTINS}


@pytest.fixture
def advantages(algos):
    """advantages("grpo", batch, eps=1e-3) -> [N] per-response advantages of a built-in."""
    def f(name, batch, **overrides):
        return per_response(run(algos[name], batch, **overrides), batch.mask)
    return f
