import copy
import math

import pytest
import torch

from poise.algorithms import algorithm_from_source, load_algorithm
from poise.sandbox.sft import held_out_prompts
from poise.sandbox.trainer import CandidateError, train_rl

CURVES = ("reward", "accuracy", "validity", "entropy", "response_length", "kl", "clip_frac", "grad_norm")


def _train(algo, smoke, policy, seed=0, steps=None):
    rl = smoke.rl if steps is None else type(smoke.rl)(**{**smoke.rl.__dict__, "steps": steps})
    pol = copy.deepcopy(policy)
    curves = train_rl(algo, pol, policy, rl, seed, held_out_prompts(smoke.eval.heldout_size, smoke.eval.heldout_seed))
    return pol, curves


def _candidate(tmp_path, body: str, name="cand"):
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return algorithm_from_source(body, name, str(path))


SHORTER = """
from poise.algorithms.base import group_mean, group_std, to_tokens

def shape_rewards(batch, cfg):
    return -batch.lengths.float()  # a dense reward: shorter is better

def compute_advantages(batch, cfg):
    s = batch.rewards
    return to_tokens((s - group_mean(s, batch.group_ids)) / (group_std(s, batch.group_ids) + 1e-6), batch.mask)
"""


def test_rl_optimises_the_reward_it_is_given(smoke, smoke_policy, tmp_path):
    # the machinery end to end: sampling, advantages, mini-batch PPO updates must push the reward up
    rl = type(smoke.rl)(**{**smoke.rl.__dict__, "steps": 12, "lr": 2e-3, "prompts_per_step": 8})
    pol = copy.deepcopy(smoke_policy)
    curves = train_rl(_candidate(tmp_path, SHORTER), pol, smoke_policy, rl, 0,
                      held_out_prompts(smoke.eval.heldout_size, smoke.eval.heldout_seed))
    first = sum(r["response_length"] for r in curves[:3]) / 3
    last = sum(r["response_length"] for r in curves[-3:]) / 3
    assert last < 0.7 * first, (first, last)


def test_zero_variance_groups_leave_grpo_with_nothing_to_learn(smoke, smoke_policy):
    # the smoke policy never answers correctly, so every GRPO group is all-wrong: zero advantages, no update
    pol, curves = _train(load_algorithm("grpo"), smoke, smoke_policy)
    assert all(r["accuracy"] == 0 and r["zero_std_groups"] == 1.0 for r in curves)
    assert all(torch.equal(a, b) for a, b in zip(pol.parameters(), smoke_policy.parameters()))


def test_training_moves_the_parameters_and_logs_every_curve(smoke, smoke_policy, tmp_path):
    pol, curves = _train(_candidate(tmp_path, SHORTER), smoke, smoke_policy)
    assert len(curves) == smoke.rl.steps
    for row in curves:
        for k in CURVES:
            assert math.isfinite(row[k]), k
        assert 0 <= row["accuracy"] <= row["validity"] <= 1
        assert row["kl"] >= 0  # k3 is never negative; rounding near 0 must not log -6e-10
    changed = [not torch.equal(a, b) for a, b in zip(pol.parameters(), smoke_policy.parameters())]
    assert all(changed)


def test_mini_batch_updates_move_the_ratio_so_clipping_can_act(smoke, smoke_policy, tmp_path):
    # a huge constant advantage pushes the policy hard; later mini-batches then see ratios outside the clip range
    algo = _candidate(tmp_path, "import torch\nCONFIG={'clip_low':0.01,'clip_high':0.01}\n"
                                "def compute_advantages(batch, cfg):\n    return 50.0 * batch.mask\n")
    _, curves = _train(algo, smoke, smoke_policy, steps=2)
    assert max(r["clip_frac"] for r in curves) > 0


def test_same_seed_same_numbers(smoke, smoke_policy):
    a = _train(load_algorithm("grpo"), smoke, smoke_policy, seed=3)
    b = _train(load_algorithm("grpo"), smoke, smoke_policy, seed=3)
    c = _train(load_algorithm("grpo"), smoke, smoke_policy, seed=4)
    strip = lambda cs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in cs]
    assert strip(a[1]) == strip(b[1])
    assert all(torch.equal(x, y) for x, y in zip(a[0].parameters(), b[0].parameters()))
    assert strip(a[1]) != strip(c[1])


@pytest.mark.parametrize("body, match", [
    ("def compute_advantages(batch, cfg):\n    return batch.mask * float('nan')\n", "non-finite"),
    ("def compute_advantages(batch, cfg):\n    return batch.mask[:, :1]\n", "returned shape"),
    ("def compute_advantages(batch, cfg):\n    return [0.0]\n", "must return a torch.Tensor"),
    ("def compute_advantages(batch, cfg):\n    x = batch.rewards\n    return x / 0 * batch.mask.sum()\n", "non-finite"),
    ("def compute_advantages(batch, cfg):\n    return batch.mask\n"
     "def compute_policy_loss(logp, batch, advantages, cfg):\n    return logp.sum().detach(), {}\n", "no gradient"),
    ("def compute_advantages(batch, cfg):\n    return batch.mask\n"
     "def compute_policy_loss(logp, batch, advantages, cfg):\n    return logp, {}\n", "scalar"),
    ("def compute_advantages(batch, cfg):\n    return batch.mask\n"
     "def shape_rewards(batch, cfg):\n    return batch.rewards[:2]\n", "shape_rewards returned shape"),
])
def test_misbehaving_candidates_get_a_clear_error(smoke, smoke_policy, tmp_path, body, match):
    with pytest.raises(CandidateError, match=match):
        _train(_candidate(tmp_path, body), smoke, smoke_policy, steps=1)


def test_an_exception_in_candidate_code_names_the_file_and_line(smoke, smoke_policy, tmp_path):
    body = "def helper(x):\n    return x['missing']\n\ndef compute_advantages(batch, cfg):\n    return helper({})\n"
    with pytest.raises(CandidateError) as e:
        _train(_candidate(tmp_path, body, "broken"), smoke, smoke_policy, steps=1)
    msg = str(e.value)
    assert "KeyError" in msg and "broken.py line 2" in msg and "x['missing']" in msg


REF_READER = """
from poise.algorithms.base import to_tokens

def compute_advantages(batch, cfg):
    # a made-up estimator that reads the reference log-probs: it must get the real ones
    d = ((batch.old_logp - batch.ref_logp) * batch.mask).sum(1)
    return to_tokens(d - d.mean(), batch.mask)
"""


def test_the_reference_forward_runs_only_for_algorithms_that_use_it(smoke, smoke_policy, tmp_path, monkeypatch):
    import poise.sandbox.trainer as trainer
    from poise.sandbox.trainer import uses_reference

    grpo = load_algorithm("grpo")
    assert not uses_reference(grpo)
    assert uses_reference(_candidate(tmp_path, REF_READER))
    kl_cfg = type(grpo.config)(**{**grpo.config.__dict__, "kl_coef": 0.1})
    assert uses_reference(type(grpo)(**{**grpo.__dict__, "config": kl_cfg}))

    seen = []  # the batches every candidate saw
    rows = []  # rows the reference model ran on

    real_logprobs = trainer.response_logprobs

    def spy(model, prompts, *a, **k):
        if model is smoke_policy:
            rows.append(prompts.shape[0])
        return real_logprobs(model, prompts, *a, **k)
    monkeypatch.setattr(trainer, "response_logprobs", spy)
    for algo in (grpo, _candidate(tmp_path, REF_READER)):
        rows.clear()
        inner = algo.compute_advantages
        wrapped = type(algo)(**{**algo.__dict__, "compute_advantages": lambda b, c, f=inner: (seen.append(b), f(b, c))[1]})
        _, curves = _train(wrapped, smoke, smoke_policy, steps=1)
        n = smoke.rl.prompts_per_step * smoke.rl.group_size
        b = seen[-1]
        if algo is grpo:  # the reference ran on one response per group, for the KL curve only
            assert rows == [smoke.rl.prompts_per_step] and torch.equal(b.ref_logp, b.old_logp)
        else:  # every row (at step 0 the policy still equals the reference, so the values cannot tell)
            assert rows == [n]
        assert math.isfinite(curves[0]["kl"])


# DAPO's dynamic sampling -----------------------------------------------------------------------

def _recording(dynamic_sampling: int, seen: list):
    from poise.algorithms.base import AlgoConfig, Algorithm
    from poise.algorithms.grpo import compute_advantages as grpo

    def adv(batch, cfg):
        seen.append((batch.correct.clone(), batch.group_ids.clone(), batch.mask.shape))
        return grpo(batch, cfg)
    return Algorithm("rec", adv, config=AlgoConfig(dynamic_sampling=dynamic_sampling))


def _odd_lengths_are_right(monkeypatch):
    # the smoke policy never answers right; grading a valid answer of odd length as right gives mixed groups
    import poise.sandbox.trainer as trainer
    real = trainer.grade

    def grade(text, finished, problem):
        valid, _ = real(text, finished, problem)
        return valid, valid and len(text) % 2 == 1
    monkeypatch.setattr(trainer, "grade", grade)


def test_dynamic_sampling_trains_only_groups_with_a_signal_and_refills_the_batch(smoke, smoke_policy, monkeypatch):
    _odd_lengths_are_right(monkeypatch)
    fixed, refilled = [], []
    _, plain = _train(_recording(0, fixed), smoke, smoke_policy, steps=2)
    _, dyn = _train(_recording(3, refilled), smoke, smoke_policy, steps=2)
    P, G = smoke.rl.prompts_per_step, smoke.rl.group_size
    assert any(r["zero_std_groups"] > 0 for r in plain), "the test needs groups without a signal"
    for correct, gids, _ in refilled:
        c = correct.view(-1, G)
        assert bool((c.any(1) & ~c.all(1)).all()), "a group without a signal was trained"
        assert torch.equal(gids, torch.arange(len(c)).repeat_interleave(G))
    for row, (correct, _, _) in zip(dyn, refilled):
        assert row["trained_groups"] == len(correct) // G <= P
        assert 1 <= row["rollout_rounds"] <= 4
        assert row["trained_groups"] == P or row["rollout_rounds"] == 4
    assert any(r["rollout_rounds"] > 1 for r in dyn)
    # the logged statistics are of the first round, the same prompts and noise as the fixed-batch arm's
    for k in ("accuracy", "validity", "entropy", "response_length", "zero_std_groups", "all_fail_groups"):
        assert dyn[0][k] == plain[0][k], k
    assert dyn[0]["sampled_tokens"] > plain[0]["sampled_tokens"] or dyn[0]["rollout_rounds"] == 1
    assert "rollout_rounds" not in plain[0]


def test_dynamic_sampling_without_any_signal_spends_its_rounds_and_takes_no_step(smoke, smoke_policy):
    seen: list = []
    pol, curves = _train(_recording(2, seen), smoke, smoke_policy, steps=2)
    assert [(r["rollout_rounds"], r["trained_groups"]) for r in curves] == [(3, 0), (3, 0)]
    assert all(r["grad_norm"] == 0 and math.isfinite(r["adv_abs_mean"]) for r in curves)
    assert all(torch.equal(a, b) for a, b in zip(pol.parameters(), smoke_policy.parameters()))


def test_rollouts_of_different_widths_join_into_one_batch(smoke, smoke_policy):
    import random

    from poise.sandbox.model import PAD
    from poise.sandbox.noise import stream_id
    from poise.sandbox.task import training_problems
    from poise.sandbox.trainer import concat_rollouts, rollout

    parts = []
    for k, n in ((0, 2), (1, 3)):
        probs = training_problems(random.Random(k), n)
        b, p, t, _ = rollout(smoke_policy, smoke_policy, probs, smoke.rl, stream_id("t", k))
        parts.append((b, p, t))
    batch, prompts, tokens = concat_rollouts(parts)
    G = smoke.rl.group_size
    assert len(batch.rewards) == 5 * G and prompts.shape[0] == tokens.shape[0] == 5 * G
    assert torch.equal(batch.group_ids, torch.arange(5).repeat_interleave(G))
    for (b, p, t), rows in zip(parts, (slice(0, 2 * G), slice(2 * G, 5 * G))):
        # prompts keep their tokens at the right edge; responses, masks and log-probs at the left
        assert torch.equal(prompts[rows, -p.shape[1]:], p) and bool((prompts[rows, :-p.shape[1]] == PAD).all())
        T = t.shape[1]
        assert torch.equal(tokens[rows, :T], t) and torch.equal(batch.old_logp[rows, :T], b.old_logp)
        assert float(batch.mask[rows, T:].abs().sum()) == 0


@pytest.mark.parametrize("value", [True, -1, 4, 1.5, "2"])
def test_dynamic_sampling_takes_a_small_whole_number_of_rounds(value):
    from poise.algorithms.base import AlgoConfig
    with pytest.raises(ValueError, match="dynamic_sampling"):
        AlgoConfig.from_dict({"dynamic_sampling": value})


def test_dynamic_sampling_needs_groups_that_can_differ(smoke, smoke_policy):
    rl = type(smoke.rl)(**{**smoke.rl.__dict__, "steps": 1, "group_size": 1})
    with pytest.raises(CandidateError, match="dynamic_sampling .* groups of 2 or more"):
        train_rl(_recording(1, []), copy.deepcopy(smoke_policy), smoke_policy, rl, 0, set())
