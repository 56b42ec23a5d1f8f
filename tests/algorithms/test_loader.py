"""Loading built-ins and candidate files, and the errors a candidate's author sees."""

import pytest

from poise.algorithms import BUILTINS, AlgorithmError, builtin_source, describe_builtins, load_algorithm
from poise.algorithms.base import default_policy_loss

GOOD = '''"""Mean-centred: a test candidate."""
import torch
from poise.algorithms.base import group_mean, to_tokens

CONFIG = {"clip_high": 0.3, "my_knob": 2}

def compute_advantages(batch, cfg):
    return to_tokens(batch.rewards - group_mean(batch.rewards, batch.group_ids), batch.mask)
'''


def write(tmp_path, text, name="cand.py"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(AlgorithmError) as e:
        load_algorithm(path)
    return path, str(e.value)


def test_good_candidate_loads(tmp_path):
    alg = load_algorithm(write(tmp_path, GOOD))
    assert alg.name == "cand" and alg.summary == "Mean-centred: a test candidate."
    assert alg.config.clip_high == 0.3 and alg.config.get("my_knob") == 2
    assert alg.compute_policy_loss is default_policy_loss and alg.hooks == ["compute_advantages"]


def test_optional_hooks_are_picked_up(tmp_path):
    src = GOOD + "\ndef shape_rewards(batch, cfg):\n    return batch.rewards\n" \
                 "\ndef compute_policy_loss(logp, batch, advantages, cfg):\n    return logp.sum(), {}\n"
    alg = load_algorithm(write(tmp_path, src))
    assert alg.hooks == ["compute_advantages", "compute_policy_loss", "shape_rewards"]


def test_syntax_error_names_file_and_line(tmp_path):
    path, msg = error(tmp_path, "import torch\n\ndef compute_advantages(batch, cfg)\n    return 0\n")
    assert path in msg and "line 3" in msg and "syntax error" in msg


def test_missing_compute_advantages(tmp_path):
    _, msg = error(tmp_path, "def advantages(batch, cfg):\n    return 0\n")
    assert "compute_advantages(batch, cfg)" in msg and "no `compute_advantages" in msg


@pytest.mark.parametrize("src,fn", [
    ("def compute_advantages(batch):\n    return 0\n", "compute_advantages"),
    ("def compute_advantages(batch, cfg, extra):\n    return 0\n", "compute_advantages"),
    (GOOD + "\ndef compute_policy_loss(logp, batch):\n    return 0\n", "compute_policy_loss"),
    (GOOD + "\nshape_rewards = 3\n", "shape_rewards"),
])
def test_wrong_signature(tmp_path, src, fn):
    _, msg = error(tmp_path, src)
    assert f"`{fn}" in msg and ("signature" in msg or "must be a function" in msg)


def test_defaulted_extra_parameter_is_accepted(tmp_path):
    load_algorithm(write(tmp_path, "def compute_advantages(batch, cfg, scale=1.0):\n    return 0\n"))


def test_config_must_be_a_dict(tmp_path):
    _, msg = error(tmp_path, GOOD.replace('CONFIG = {"clip_high": 0.3, "my_knob": 2}', 'CONFIG = [("clip_high", 0.3)]'))
    assert "CONFIG must be a dict" in msg and "list" in msg


def test_bad_loss_agg(tmp_path):
    _, msg = error(tmp_path, GOOD.replace('"my_knob": 2', '"loss_agg": "sequence-mean"'))
    assert "bad CONFIG" in msg and "sequence-mean" in msg and "token-mean" in msg


@pytest.mark.parametrize("value", ["10**400", "-(10**309)"])
def test_a_coefficient_too_large_for_a_float_is_a_bad_config(tmp_path, value):
    # an int passes math.isfinite, then overflowed in the trainer's arithmetic (an "internal" crash there)
    _, msg = error(tmp_path, GOOD.replace('"my_knob": 2', f'"kl_coef": {value}'))
    assert "bad CONFIG" in msg and "kl_coef" in msg


def test_numeric_settings_are_floats_whatever_the_candidate_wrote(tmp_path):
    # 10**20 as an int made `kl_coef * tensor` raise OverflowError in the trusted trainer; as a float it is
    # an absurd coefficient whose losses the trainer's finiteness checks stop as the candidate's fault
    cfg = load_algorithm(write(tmp_path, GOOD.replace('"my_knob": 2', '"kl_coef": 10**20, "eps": 0'))).config
    assert type(cfg.kl_coef) is float and type(cfg.eps) is float and cfg.kl_coef == 1e20
    import torch
    assert torch.isfinite(cfg.kl_coef * torch.tensor(0.5))


def test_top_level_exception(tmp_path):
    _, msg = error(tmp_path, "raise RuntimeError('boom')\n")
    assert "failed while loading" in msg and "boom" in msg


def test_missing_file(tmp_path):
    with pytest.raises(AlgorithmError, match="does not exist"):
        load_algorithm(str(tmp_path / "nope.py"))


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(AlgorithmError) as e:
        load_algorithm("grpoo")
    for name in BUILTINS:
        assert name in str(e.value)


def test_builtin_by_name_uses_the_packaged_source():
    alg = load_algorithm("rloo")
    assert alg.source == builtin_source("rloo") and "leave-one-out" in alg.source


def test_describe_builtins_lists_all_with_summaries():
    described = describe_builtins()
    assert [n for n, _ in described] == list(BUILTINS)
    assert all(s and s != "(missing)" for _, s in described)
