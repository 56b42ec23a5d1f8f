"""The verl backend on a machine without a GPU: what can be checked here (its config, the settings it hands
verl, verl's own logger read into poise's curves, and that it refuses at once to run without a GPU). The
training itself runs in benchmarks/gpu_check.sh on a GPU machine."""

import json
import os
import subprocess
import sys

import pytest
import torch

from poise.backends import BackendError, BackendSpec, get_backend, make_spec
from poise.backends.verl import VerlBackend, curve_row, read_log
from poise.backends.verl.config import parse

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


@needs_no_gpu
def test_without_a_gpu_the_cli_says_so_before_anything_runs(tmp_path):
    for cmd in (["train", "--algorithm", "grpo", "--backend", "verl", "-o", str(tmp_path / "t")],
                ["discover", "--backend", "verl", "--budget", "1", "--out", str(tmp_path / "d")]):
        r = subprocess.run([sys.executable, "-m", "poise.cli", *cmd], capture_output=True, text=True, timeout=120)
        said = " ".join((r.stdout + r.stderr).split())
        assert r.returncode != 0 and "needs a GPU" in said and "--executor ray --gpus-per-eval" in said, said
        assert not (tmp_path / "d" / "archive.db").exists()
    r = subprocess.run([sys.executable, "-m", "poise.cli", "discover", "--backend", "verl", "--executor", "ray",
                        "--budget", "1", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--gpus-per-eval" in " ".join((r.stdout + r.stderr).split())
    with pytest.raises(BackendError, match="needs a GPU"):
        make_spec("verl", "standard", None)
    assert make_spec("verl", "standard", None, gpus_elsewhere=True).name == "verl"  # the cluster's nodes have them


@pytest.mark.parametrize("override, words", [
    ("algorithm.adv_estimator=grpo", "set by poise"),
    ("actor_rollout_ref.actor.clip_ratio_high=0.28", "set by poise"),
    ("+reward.custom_reward_function.path=x.py", "set by poise"),
    ("actor_rollout_ref.rollout.name", "KEY=VALUE"),
])
def test_a_recipe_may_not_override_what_decides_the_algorithm(override, words):
    with pytest.raises(BackendError, match=words):
        parse({"verl": {"overrides": [override]}})


def test_poise_s_settings_follow_the_recipe_s_and_carry_the_candidate_s_config(tmp_path):
    b = VerlBackend(BackendSpec("verl", config={"verl": {"overrides": ["actor_rollout_ref.rollout.name=vllm",
                                                                       "trainer.total_training_steps=999"]},
                                                "trainer": {"steps": 7, "group_size": 4}}))
    s = b.settings("poise_cx", tmp_path / "poise_cx.py", {"clip_low": 0.1, "clip_high": 0.28, "loss_agg": "token-sum",
                                                          "kl_coef": 0.001, "kl_type": "k1", "entropy_coef": 0.0},
                   tmp_path, tmp_path / "ckpt", seed=3)
    assert s[0] == "actor_rollout_ref.rollout.name=vllm"
    assert s.index("trainer.total_training_steps=7") > s.index("trainer.total_training_steps=999")  # the later wins
    for want in ("algorithm.adv_estimator=poise_cx", "actor_rollout_ref.actor.policy_loss.loss_mode=poise_cx",
                 "actor_rollout_ref.actor.clip_ratio_high=0.28", "actor_rollout_ref.actor.loss_agg_mode=token-sum",
                 "actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_type=kl",
                 "actor_rollout_ref.rollout.n=4", "data.seed=3", f"reward.custom_reward_function.path={tmp_path}/poise_cx.py"):
        assert want in s, want


def test_the_training_problems_are_written_in_verl_s_format(tmp_path):
    pd = pytest.importorskip("pandas")
    b = get_backend(BackendSpec("verl", config={"trainer": {"steps": 2, "prompts_per_step": 3}}))
    b.write_data(tmp_path, seed=0)
    df = pd.read_parquet(tmp_path / "train.parquet")
    assert len(df) == 6 and set(df.columns) >= {"data_source", "prompt", "reward_model", "extra_info"}
    first = df.iloc[0]
    assert first["prompt"][0]["role"] == "user" and "\\boxed{}" in first["prompt"][0]["content"]
    assert str(first["reward_model"]["ground_truth"]).lstrip("-").isdigit()


def test_verl_s_file_logger_becomes_poise_s_curves(tmp_path):
    """verl's own FileLogger writes the log; a line being written is not read until it is whole."""
    tracking = pytest.importorskip("verl.utils.tracking")
    path = tmp_path / "m.jsonl"
    os.environ["VERL_FILE_LOGGER_PATH"] = str(path)
    try:
        log = tracking.FileLogger("poise", "t")
    finally:
        del os.environ["VERL_FILE_LOGGER_PATH"]
    for step in (1, 2):
        log.log({"critic/rewards/mean": 0.25 * step, "critic/score/mean": 0.2 * step, "actor/entropy": 1.5,
                 "response_length/mean": 90.0 + step, "actor/pg_clipfrac": 0.01, "actor/grad_norm": 0.5,
                 "actor/pg_loss": -0.1, "response_length/clip_ratio": 0.1, "timing_s/step": 12.0, "training/epoch": 0},
                step)
    with open(path, "ab") as f:
        f.write(b'{"step": 3, "data": {"critic/rew')  # half a line
    got = read_log(path, 0)
    assert [s for s, _ in got] == [1, 2]
    rows = [curve_row(i, d) for i, (_, d) in enumerate(got)]
    assert rows[1]["reward"] == 0.5 and rows[1]["accuracy"] == pytest.approx(0.4) and rows[1]["response_length"] == 92.0
    assert rows[0]["clip_frac"] == 0.01 and rows[0]["truncated"] == 0.1 and rows[0]["step_s"] == 12.0
    assert "training/epoch" not in rows[0]["verl"] and rows[0]["verl"]["actor/grad_norm"] == 0.5
    json.dumps(rows)  # they go into the archive
    assert read_log(path, 2) == []


def test_verl_s_own_config_takes_every_setting_poise_gives_it(tmp_path):
    """verl.trainer.main_ppo composes its Hydra config from poise's settings (`--cfg job` prints it and exits
    before training): every key exists, and the candidate's estimator, loss and CONFIG are what verl reads."""
    pytest.importorskip("hydra")
    yaml = pytest.importorskip("yaml")
    b = VerlBackend(BackendSpec("verl", config={"verl": {"overrides": ["actor_rollout_ref.rollout.name=vllm"]},
                                                "trainer": {"steps": 5, "group_size": 4, "prompts_per_step": 2}}))
    args = b.settings("poise_cx", tmp_path / "poise_cx.py", {"clip_low": 0.1, "clip_high": 0.28, "loss_agg": "token-sum",
                                                             "kl_coef": 0.001, "kl_type": "k2", "entropy_coef": 0.01},
                      tmp_path, tmp_path / "ckpt", seed=3)
    r = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", "--cfg", "job", *args], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    c = yaml.safe_load(r.stdout)
    actor = c["actor_rollout_ref"]["actor"]
    assert c["algorithm"]["adv_estimator"] == "poise_cx" and actor["policy_loss"]["loss_mode"] == "poise_cx"
    assert (actor["clip_ratio_low"], actor["clip_ratio_high"], actor["loss_agg_mode"]) == (0.1, 0.28, "token-sum")
    assert actor["use_kl_loss"] is True and actor["kl_loss_type"] == "mse" and actor["entropy_coeff"] == 0.01
    assert c["reward"]["custom_reward_function"] == {"path": str(tmp_path / "poise_cx.py"), "name": "compute_score"}
    assert c["trainer"]["total_training_steps"] == 5 and c["actor_rollout_ref"]["rollout"]["n"] == 4
    assert "hf_model" in actor["checkpoint"]["save_contents"] and "file" in c["trainer"]["logger"]
    assert c["actor_rollout_ref"]["rollout"]["name"] == "vllm" and c["data"]["seed"] == 3


def test_the_example_recipe_is_a_valid_config():
    import tomllib
    from pathlib import Path

    cfg = parse(tomllib.loads((Path(__file__).parents[3] / "examples" / "verl-recipe.toml").read_text()))
    assert cfg.verl.n_gpus_per_node == 8 and cfg.model.name == "Qwen/Qwen2.5-Math-1.5B" and len(cfg.benchmarks) == 6


def test_names_and_texts_from_a_candidate_cannot_inject_code_into_the_plugin():
    import ast

    from poise.backends.verl.launch import plugin_module

    evil = 'x"""\nimport os; os.system("touch /tmp/owned")\n"""\\'
    text = plugin_module("poise_cx", "def compute_advantages(batch, cfg):\n    return batch.mask\n" + evil,
                         ["compute_advantages"], False, evil, f"{evil}: a name an LLM chose\n{evil}")
    tree = ast.parse(text)
    kinds = [type(n).__name__ for n in tree.body]
    assert kinds == ["Expr", "ImportFrom", "Assign", "Assign", "Assign"]  # docstring, import, SOURCE, NAME, __all__
    assert evil in ast.get_docstring(tree)
    with pytest.raises(ValueError, match="module name"):
        plugin_module("poise_x; import os", "", [], False, "", "")


def test_a_candidate_that_reads_the_reference_gets_verl_to_compute_it():
    from poise.backends.verl.launch import algorithm_settings

    plain = algorithm_settings("poise_cx", {"kl_coef": 0.0}, "p.py")
    ref = algorithm_settings("poise_cx", {"kl_coef": 0.0}, "p.py", needs_ref=True)
    assert "actor_rollout_ref.actor.use_kl_loss=False" in plain
    assert "actor_rollout_ref.actor.use_kl_loss=True" in ref and "actor_rollout_ref.actor.kl_loss_coef=0.0" in ref


@pytest.mark.parametrize("config, words", [({"model": {"name": "random"}}, "folder or the hub"),
                                           ({"verl": {"nnodes": 2}}, "less than or equal to 1")])
def test_settings_verl_cannot_run_are_refused(config, words):
    with pytest.raises(BackendError, match=words):
        parse(config)


def test_one_evaluation_end_to_end_around_verl_s_training_loop(tmp_path, monkeypatch):
    """The backend's whole evaluation with `cpu_main_ppo.py` in place of verl's GPU training loop: the
    training data and the plugin written, verl's import of the plugin, poise's reward function, verl's
    compute_advantage and the registry's loss on each step's responses, verl's file log and the plugin's
    statistics followed into the curves, the checkpoint scored as the TRL backend scores."""
    pytest.importorskip("verl.trainer.ppo.ray_trainer")
    pytest.importorskip("trl")
    import poise.backends.verl as verl_backend
    from poise.algorithms import load_algorithm

    monkeypatch.setattr(verl_backend, "has_gpu", lambda: True)
    monkeypatch.setenv(verl_backend.MAIN_ENV, "tests.backends.verl.cpu_main_ppo")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    b = VerlBackend(BackendSpec("verl", config={
        "model": {"name": str(tmp_path / "unused")},
        "trainer": {"steps": 3, "prompts_per_step": 4, "group_size": 4},
        "generation": {"max_new_tokens": 12},
        "benchmarks": {"aime24": {"source": "tiny-math:aime24", "k": 2, "weight": 0.5, "limit": 4},
                       "math500": {"source": "tiny-math:math500", "metric": "greedy", "weight": 0.5, "limit": 4}}}))
    from poise.isolation import jail_status

    b.jailed = jail_status().ok  # the run's decision: jailed where the jail starts (dapo may run unjailed elsewhere)
    steps = []
    res = b.evaluate(load_algorithm("dapo"), 0, on_step=lambda i, row: steps.append(i))
    assert steps == [0, 1, 2] and len(res.trajectory) == 3 and res.fidelity == "verl"
    for row in res.trajectory:
        # from verl's log, and from the plugin's estimator: what reflection reads
        assert {"clip_frac", "loss", "grad_norm", "response_length", "step_s"} <= set(row)
        assert {"accuracy", "validity", "all_fail_groups", "zero_std_groups", "adv_abs_mean"} <= set(row)
        assert 0 <= row["validity"] <= 1 and 0 <= row["all_fail_groups"] <= 1 and row["adv_abs_mean"] > 0
    assert set(res.metrics["tiers"]) == {"aime24", "math500"} and 0 <= res.metrics["overall"] <= 100
