import pytest

from poise.algorithms import load_algorithm
from poise.algorithms.base import AlgoConfig
from poise.backends.base import Unsupported, sandbox_only
from poise.backends.verl.launch import launch_script


def test_a_fixed_batch_backend_refuses_dynamic_sampling_by_name():
    algo = load_algorithm("dapo")
    sandbox_only(algo, "trl")  # DAPO as shipped trains a fixed batch: nothing to refuse
    algo.config = AlgoConfig.from_dict({**vars(algo.config), "dynamic_sampling": 2})
    with pytest.raises(Unsupported, match=r"dapo: dynamic_sampling .* sandbox backend only; --backend trl"):
        sandbox_only(algo, "trl")


def test_the_verl_script_says_what_it_leaves_out():
    assert "dynamic_sampling" not in launch_script("m", {"clip_high": 0.28})
    script = launch_script("m", {"clip_high": 0.28, "dynamic_sampling": 2})
    assert "# Not carried over: CONFIG's dynamic_sampling=2" in script
    assert script.index("Not carried over") < script.index("set -euo pipefail")
