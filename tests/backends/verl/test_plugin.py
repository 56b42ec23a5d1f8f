"""The verl plugin against verl's own registries (verl installed as `.ci/run` does: CPU, no GPU stack):
for every built-in and for an exported discovered candidate, the functions verl returns for the poise
name give, on verl-shaped inputs (token-level rewards, a boolean mask, uid strings in shuffled order,
reward extras as numpy arrays), the advantages and the loss that poise's own trainer path gives for the
same responses."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if not os.environ.get("POISE_REQUIRE_VERL"):
    pytest.importorskip("verl.trainer.ppo.core_algos")
from verl.trainer.ppo import core_algos  # noqa: E402

from poise.algorithms import BUILTINS, builtin_source, load_algorithm  # noqa: E402
from poise.algorithms.base import RolloutBatch  # noqa: E402
from poise.algorithms.contract import CandidateError  # noqa: E402
from poise.algorithms import algorithm_from_source  # noqa: E402
from poise.backends.verl import plugin  # noqa: E402
from poise.sandbox.trainer import policy_loss, shaped_advantages  # noqa: E402

P, G, T = 5, 6, 16
N = P * G


@pytest.fixture(autouse=True, scope="module")
def _no_hook_process_outlives_the_module():
    yield
    plugin.close_all()  # the plugin keeps one per candidate for its process's life; this process goes on


def responses(seed: int) -> dict:
    """One step's responses, row by row, as poise's trainer sees them (groups contiguous)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    lengths[:3] = T  # some fill the budget: truncated
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    answered = torch.rand(N, generator=g) < 0.8  # a final answer can be read
    right = answered & (torch.rand(N, generator=g) < 0.4)
    right[G:2 * G] = False  # an all-fail group
    truncated = lengths >= T
    old = -torch.rand(N, T, generator=g) * 3 * mask
    ent = torch.rand(N, T, generator=g) * mask
    batch = RolloutBatch(rewards=(right & ~truncated).float(), correct=right & ~truncated, valid=answered & ~truncated,
                         lengths=lengths, mask=mask, group_ids=torch.arange(N) // G, old_logp=old, ref_logp=old,
                         entropy=ent, truncated=truncated, group_size=G, max_len=T)
    return {"batch": batch, "answered": answered, "right": right, "perm": torch.randperm(N, generator=g),
            "logp": old + 0.3 * torch.randn(N, T, generator=g) * mask}


def verl_inputs(r: dict) -> dict:
    """The same responses as verl hands them over: shuffled, uids as strings, the score on the last token,
    the reward function's extras as numpy arrays, a boolean mask."""
    b, p = r["batch"], r["perm"]
    scores = torch.zeros(N, T)
    scores[torch.arange(N), b.lengths - 1] = r["right"].float()  # compute_score does not know about truncation
    return {"token_level_rewards": scores[p], "response_mask": b.mask[p].bool(),
            "index": np.array([f"uid-{int(i)}" for i in b.group_ids[p]], dtype=object),
            "poise_extras": {"poise_valid": np.array(r["answered"][p].tolist()),
                             "poise_correct": np.array(r["right"][p].tolist()),
                             "old_log_probs": b.old_logp[p], "entropys": b.entropy[p]}}


def poise_path(algo, r: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advantages, loss and d loss / d logp as poise's trainers compute them."""
    b = r["batch"].clone()
    adv = shaped_advantages(algo, b, 0)
    logp = r["logp"].clone().requires_grad_(True)
    loss, _ = policy_loss(algo, logp, None, b, adv, 0)
    (grad,) = torch.autograd.grad(loss, logp)
    return adv, loss.detach(), grad


def verl_path(name: str, algo, r: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v = verl_inputs(r)
    adv, ret = core_algos.get_adv_estimator_fn(name)(v["token_level_rewards"], v["response_mask"], v["index"], None,
                                                     poise_extras=v["poise_extras"])
    assert torch.equal(adv, ret)
    logp = r["logp"][r["perm"]].clone().requires_grad_(True)
    loss, metrics = core_algos.get_policy_loss_fn(name)(old_log_prob=v["poise_extras"]["old_log_probs"], log_prob=logp,
                                                       advantages=adv, response_mask=v["response_mask"],
                                                       loss_agg_mode=algo.config.loss_agg, config=None)
    assert 0.0 <= metrics["actor/pg_clipfrac"] <= 1.0
    (grad,) = torch.autograd.grad(loss, logp)
    return adv, loss.detach(), grad


def check_same(name: str, algo, seed: int = 0) -> None:
    r = responses(seed)
    a_p, l_p, g_p = poise_path(algo, r)
    a_v, l_v, g_v = verl_path(name, algo, r)
    p = r["perm"]
    assert a_p.abs().sum() > 0  # something to compare
    torch.testing.assert_close(a_v, a_p[p], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l_v, l_p, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_v, g_p[p], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_gives_poise_s_numbers_through_verl_s_registries(name):
    key = plugin.register(f"test_{name}", builtin_source(name), origin=f"builtin:{name}", trusted=True,
                          wrap_trainer=False)
    check_same(key, load_algorithm(name))


CUSTOM = '''
import torch
from poise.algorithms.base import group_mean, group_std, to_tokens, aggregate
CONFIG = {"clip_low": 0.1, "clip_high": 0.3, "loss_agg": "seq-mean-token-mean"}
def shape_rewards(batch, cfg):
    return batch.rewards - 0.1 * (~batch.valid).float() - 0.001 * batch.lengths.float()
def compute_advantages(batch, cfg):
    r = batch.rewards
    a = (r - group_mean(r, batch.group_ids)) / (group_std(r, batch.group_ids) + cfg.eps)
    return to_tokens(a, batch.mask) * (1 + 0.1 * batch.entropy) + 0.01 * batch.old_logp
def compute_policy_loss(logp, batch, advantages, cfg):
    ratio = torch.exp(logp - batch.old_logp)
    loss = -torch.minimum(ratio * advantages, ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * advantages)
    return aggregate(loss + 0.05 * (logp - batch.old_logp) ** 2, batch.mask, cfg.loss_agg, batch.max_len), {}
'''


def test_a_candidate_with_its_own_shaping_and_loss_runs_jailed_and_matches():
    key = plugin.register("test_custom", CUSTOM, origin="test:custom", wrap_trainer=False)
    check_same(key, algorithm_from_source(CUSTOM, "custom", "test:custom"), seed=1)
    assert plugin._HOOKS[key].jailed or not os.environ.get("POISE_REQUIRE_JAIL")


def test_a_loss_that_reads_what_verl_does_not_give_fails_loudly():
    src = CUSTOM.replace("(logp - batch.old_logp) ** 2", "batch.rewards[:, None]")
    key = plugin.register("test_reads_rewards", src, origin="test:reads-rewards", wrap_trainer=False)
    r = responses(2)
    v = verl_inputs(r)
    adv, _ = core_algos.get_adv_estimator_fn(key)(v["token_level_rewards"], v["response_mask"], v["index"], None,
                                                  poise_extras=v["poise_extras"])
    with pytest.raises(CandidateError, match="non-finite|NaN"):
        core_algos.get_policy_loss_fn(key)(old_log_prob=v["poise_extras"]["old_log_probs"],
                                           log_prob=r["logp"][r["perm"]].requires_grad_(True), advantages=adv,
                                           response_mask=v["response_mask"], config=None)


def test_without_the_plugin_s_reward_function_the_estimator_says_so():
    key = plugin.register("test_grpo_no_extras", builtin_source("grpo"), trusted=True, wrap_trainer=False)
    v = verl_inputs(responses(3))
    with pytest.raises(ValueError, match="compute_score"):
        core_algos.get_adv_estimator_fn(key)(v["token_level_rewards"], v["response_mask"], v["index"], None)


def test_compute_score_grades_like_poise():
    s = plugin.compute_score("math", "so the answer is \\boxed{1,000}", "1000")
    assert s == {"score": 1.0, "poise_valid": True, "poise_correct": True}
    assert plugin.compute_score("math", "\\boxed{7}", "8") == {"score": 0.0, "poise_valid": True, "poise_correct": False}
    assert plugin.compute_score("math", "I think 8", "8")["poise_valid"] is False


def test_an_exported_discovered_candidate_loads_through_verl_s_own_plugin_mechanism(tmp_path):
    """`poise export --to verl` on the shipped run's best candidate; verl imports the module named in
    VERL_USE_EXTERNAL_MODULES, and its registries then give the numbers poise gives."""
    from tests.report import fake_run

    run = fake_run.shipped(tmp_path / "run")
    out = tmp_path / "verl"
    r = subprocess.run([sys.executable, "-m", "poise.cli", "export", str(run), "8", "--to", "verl", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    module = "poise_dace_vm_loo_grpo"
    plugin_file, script = out / f"{module}.py", out / f"{module}_verl.sh"
    assert plugin_file.is_file() and script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    for setting in (f"algorithm.adv_estimator={module}", f"policy_loss.loss_mode={module}",
                    "reward.custom_reward_function.name=compute_score", f"VERL_USE_EXTERNAL_MODULES=\"{module}"):
        assert setting in text, setting
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # verl's own loading: `import verl` imports the plugin; the trainer, imported after, is wrapped
    probe = ("import verl\nfrom verl.trainer.ppo import core_algos\n"
             f"print(core_algos.get_adv_estimator_fn('{module}').__name__, "
             f"core_algos.get_policy_loss_fn('{module}').__name__)\n")
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": module, "PYTHONPATH": f"{out}:{os.getcwd()}"}
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0 and f"{module}_advantages {module}_policy_loss" in p.stdout, p.stderr[-3000:]
    # the same numbers as poise's path for the archived code
    spec = importlib.util.spec_from_file_location(module, plugin_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from poise.discovery.archive import Archive

    code = Archive(run / "archive.db", readonly=True).get(8).code
    assert mod.SOURCE == code and mod.NAME == module
    assert "trusted=False" in plugin_file.read_text()  # not a built-in's code: it runs jailed, or not at all
    check_same(module, algorithm_from_source(code, "c8", "archive:#8"), seed=4)


def test_verl_s_trainer_hands_the_extras_to_a_poise_estimator():
    """verl's compute_advantage, wrapped by the plugin, on a DataProto as verl's fit loop builds it."""
    ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer")
    from verl import DataProto

    key = plugin.register("test_dapo_trainer", builtin_source("dapo"), trusted=True)
    assert getattr(ray_trainer.compute_advantage, "poise_wrapped", False)
    r = responses(5)
    v = verl_inputs(r)
    e = v["poise_extras"]
    data = DataProto.from_dict(tensors={"token_level_rewards": v["token_level_rewards"],
                                        "response_mask": v["response_mask"].long(),
                                        "old_log_probs": e["old_log_probs"], "entropys": e["entropys"]},
                               non_tensors={"uid": v["index"], "poise_valid": e["poise_valid"],
                                            "poise_correct": e["poise_correct"]})
    out = ray_trainer.compute_advantage(data, adv_estimator=key, config=None)
    a_p, _, _ = poise_path(load_algorithm("dapo"), r)
    torch.testing.assert_close(out.batch["advantages"], a_p[r["perm"]], rtol=1e-5, atol=1e-6)
    # verl's own estimators are untouched
    grpo = ray_trainer.compute_advantage(DataProto.from_dict(
        tensors={"token_level_rewards": v["token_level_rewards"], "response_mask": v["response_mask"].long()},
        non_tensors={"uid": v["index"]}), adv_estimator="grpo", config=None)
    ref, _ = core_algos.compute_grpo_outcome_advantage(v["token_level_rewards"], v["response_mask"].long(), v["index"])
    torch.testing.assert_close(grpo.batch["advantages"], ref)


def test_the_estimator_logs_the_curves_verl_does_not(tmp_path, monkeypatch):
    """Validity, accuracy and the all-fail groups of each step, for the verl backend's curves."""
    import json

    log = tmp_path / "steps.jsonl"
    monkeypatch.setenv(plugin.CURVES_ENV, str(log))
    key = plugin.register("test_grpo_curves", builtin_source("grpo"), trusted=True, wrap_trainer=False)
    for seed in (6, 7):
        r = responses(seed)
        v = verl_inputs(r)
        core_algos.get_adv_estimator_fn(key)(v["token_level_rewards"], v["response_mask"], v["index"], None,
                                             poise_extras=v["poise_extras"])
    rows = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1]
    b = r["batch"]
    assert rows[1]["accuracy"] == pytest.approx(float(b.correct.float().mean()))
    assert rows[1]["validity"] == pytest.approx(float(b.valid.float().mean()))
    fails = float((b.correct.view(P, G).sum(1) == 0).float().mean())
    assert rows[1]["all_fail_groups"] == pytest.approx(fails) and fails >= 1 / P
    assert rows[1]["truncated"] == pytest.approx(float(b.truncated.float().mean())) and rows[1]["adv_abs_mean"] > 0
