"""The verifier: lint rejections (no process), then every case end to end: the candidate in its jailed
hook process, the probe batches and the verdicts here."""

import pytest

from poise.algorithms import builtin_source
from poise.isolation.process import Limits
from poise.verify import CLAIMS, VerificationReport, verify
from poise.verify.properties import DETERMINISM, LAYOUT, SHAPE

HEADER = "import torch\nfrom poise.algorithms.base import group_mean, group_std, to_tokens\n\n"


def candidate(*lines: str) -> str:
    return HEADER + "def compute_advantages(batch, cfg):\n" + "".join(f"    {l}\n" for l in lines)


# ------------------------------------------------------------------------------------------------
# Static rejections: nothing is started.

@pytest.mark.parametrize("src, phrase", [
    (HEADER + "def compute_advantages(batch, cfg)\n    return 1\n", "line 4: syntax error"),
    ("import os\n" + candidate("os.fork()", "return batch.rewards"), "line 1: `import os` is not allowed"),
    ("import torch\ntorch.exp = lambda x: x\n" + candidate("return batch.rewards"), "line 2: assignment to the attribute `.exp`"),
    ("import sqlite3\n" + candidate("sqlite3.connect('x.db')", "return batch.rewards"), "`import sqlite3` is not allowed"),
    (candidate("open('/tmp/poise-pwned', 'w').write('x')", "return batch.rewards"), "line 5: use of the builtin `open`"),
])
def test_unsafe_sources_are_rejected_statically_without_running(src, phrase):
    rep = verify(src, "bad")
    assert not rep.ok and rep.stage == "static" and rep.isolation == []
    assert any(phrase in e for e in rep.errors), rep.errors


def test_an_unknown_claim_names_the_known_ones():
    rep = verify(builtin_source("grpo"), "grpo", ["correct_above_wrong", "is_great"])
    assert rep.stage == "property" and not rep.ok
    assert rep.errors == [f"unknown claim 'is_great'; the known claims are {', '.join(CLAIMS)}"]


# ------------------------------------------------------------------------------------------------
# End to end, one child each.

def test_grpo_passes_its_claims_in_its_hook_process():
    claims = ["correct_above_wrong", "zero_mean_mixed", "all_fail_zero", "loss_sign"]
    rep = verify(builtin_source("grpo"), "grpo", claims)
    assert isinstance(rep, VerificationReport) and rep.ok and rep.stage == "passed", rep.errors
    assert {c["name"] for c in rep.checks} >= {f"claim: {c}" for c in claims} | {SHAPE, DETERMINISM, LAYOUT}
    assert all(c["ok"] for c in rep.checks) and len(rep.behaviour) == 12
    assert {"hook-process", "bubblewrap", "seccomp"} <= set(rep.isolation) and rep.to_dict()["stage"] == "passed"
    # its CONFIG as the trusted side read it back from the hook process, every field filled in
    assert rep.config["clip_high"] == 0.2 and rep.config["dynamic_sampling"] == 0


def test_an_endless_loop_is_a_timeout():
    rep = verify(candidate("while True:", "    pass"), "loop", limits=Limits(timeout_s=4, memory_mb=2048))
    assert rep.stage == "timeout" and "did not finish within 4s" in rep.errors[0]


def test_a_huge_allocation_is_a_memory_failure():
    rep = verify(candidate("x = torch.empty(10**12)", "return batch.rewards"), "hog")
    assert rep.stage == "memory" and "can't allocate memory" in rep.errors[0]
    assert "candidate:hog line 5" in rep.errors[0]


def test_mutating_the_batch_changes_nothing_outside_the_hook_process():
    # each call gets its own copies in another process: an in-place update is the candidate's own business
    src = candidate("batch.rewards.mul_(2)", "extra = cfg.extra", "extra['calls'] = extra.get('calls', 0) + 1",
                    "return to_tokens(batch.rewards - group_mean(batch.rewards, batch.group_ids), batch.mask)")
    rep = verify(src, "mut", ["correct_above_wrong"])
    assert rep.ok and rep.stage == "passed", rep.errors


# ------------------------------------------------------------------------------------------------
# Base checks and claims, many candidates in one child.

GRPO = builtin_source("grpo")
FLIPPED = GRPO.replace("return to_tokens((s - mean)", "return to_tokens((mean - s)")
REFORMATTED = GRPO.replace("s = batch.rewards.float()", "s = batch.rewards.float()  # the same code, reworded")
CASES = {
    "grpo": (GRPO, ["correct_above_wrong", "zero_mean_mixed", "all_fail_zero", "loss_sign"]),
    "grpo_reworded": (REFORMATTED, []),
    "dr_grpo": (builtin_source("dr_grpo"), ["correct_above_wrong", "zero_mean_mixed"]),
    "av_grpo": (builtin_source("av_grpo"), ["correct_above_wrong", "zero_mean_mixed", "all_fail_zero", "bernoulli_scale"]),
    "vm_av_grpo": (builtin_source("vm_av_grpo"), ["correct_above_wrong", "invalid_below_valid", "all_fail_zero",
                                                  "bernoulli_scale"]),
    "dace_grpo": (builtin_source("dace_grpo"), ["correct_above_wrong", "zero_mean_mixed", "all_fail_zero",
                                                "length_term_correct_only", "shorter_correct_preferred"]),
    "dapo": (builtin_source("dapo"), ["correct_above_wrong", "zero_mean_mixed"]),
    "flipped": (FLIPPED, ["correct_above_wrong"]),
    "dapo_wrong_claims": (builtin_source("dapo"), ["rewards_unchanged_for_wrong", "length_term_correct_only"]),
    "grpo_wrong_claims": (GRPO, ["invalid_below_valid", "bernoulli_scale", "all_fail_push_down",
                                 "shorter_correct_preferred", "rewards_unchanged_for_wrong"]),
    "push_down": (candidate("a = batch.rewards - group_mean(batch.rewards, batch.group_ids)",
                            "return a - 0.1 * (group_mean(batch.correct.float(), batch.group_ids) == 0).float()"),
                  ["all_fail_push_down", "correct_above_wrong"]),
    "nan": (candidate("return batch.rewards / (batch.rewards - batch.rewards)"), []),
    "wrong_shape": (candidate("return batch.rewards[:, None].expand(-1, 3)"), []),
    "not_a_tensor": (candidate("return [0.0] * batch.num_responses"), []),
    "random": (candidate("return batch.rewards + torch.rand(batch.rewards.shape)"), []),
    "reshapes": (candidate("s = batch.rewards.view(-1, batch.group_size)",
                           "return ((s - s.mean(1, keepdim=True)) / (s.std(1, unbiased=False, keepdim=True) + cfg.eps)).flatten()"),
                 []),
    "raises": (candidate("raise ZeroDivisionError('no groups')"), []),
    "bad_loss": (candidate("return batch.rewards") + "\ndef compute_policy_loss(logp, batch, advantages, cfg):\n"
                 "    return (logp.detach() * advantages).mean(), {}\n", []),
    "sign_flipped_loss": (candidate("return to_tokens(batch.rewards, batch.mask)") +
                          "\ndef compute_policy_loss(logp, batch, advantages, cfg):\n"
                          "    return (logp * advantages * batch.mask).sum() / batch.mask.sum(), {}\n", ["loss_sign"]),
    "bad_config": ("CONFIG = {'loss_agg': 'nope'}\n" + candidate("return batch.rewards"), []),
}


@pytest.fixture(scope="module")
def reports():
    return {k: verify(s, k, c).to_dict() for k, (s, c) in CASES.items()}


def failed(report: dict) -> dict[str, str]:
    return {c["name"]: c["message"] for c in report["checks"] if not c["ok"]}


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "av_grpo", "vm_av_grpo", "dace_grpo", "dapo", "push_down"])
def test_builtins_pass_the_claims_that_describe_them(reports, name):
    r = reports[name]
    assert r["stage"] == "passed" and r["errors"] == [] and failed(r) == {}, r["errors"]


def test_sign_flipped_grpo_fails_correct_above_wrong(reports):
    r = reports["flipped"]
    assert r["stage"] == "property"
    msg = failed(r)["claim: correct_above_wrong"]
    assert "correct response" in msg and "<= wrong response" in msg and "has advantage -" in msg


def test_claims_that_do_not_describe_an_algorithm_fail_with_what_was_observed(reports):
    dapo, grpo = failed(reports["dapo_wrong_claims"]), failed(reports["grpo_wrong_claims"])
    assert "got shaped reward" in dapo["claim: rewards_unchanged_for_wrong"]
    assert "changing only the lengths of wrong responses moved" in dapo["claim: length_term_correct_only"]
    assert "invalid response" in grpo["claim: invalid_below_valid"]
    assert "the Bernoulli scaling (1-p)/sqrt(p(1-p)) gives" in grpo["claim: bernoulli_scale"]
    assert "no response has a negative advantage" in grpo["claim: all_fail_push_down"]
    assert "<= correct response" in grpo["claim: shorter_correct_preferred"]
    assert "does not define" in grpo["claim: rewards_unchanged_for_wrong"]


def test_nan_advantages_fail_at_runtime_as_non_finite(reports):
    r = reports["nan"]
    assert r["stage"] == "runtime" and "non-finite values (NaN or inf)" in failed(r)[SHAPE]


def test_a_wrong_shape_fails_at_runtime_naming_the_expected_shapes(reports):
    msg = failed(reports["wrong_shape"])[SHAPE]
    assert "returned shape [64, 3]" in msg and "expected [64, 24] or [64]" in msg


def test_a_value_that_is_not_a_tensor_fails_at_runtime_naming_its_type(reports):
    r = reports["not_a_tensor"]
    assert r["stage"] == "runtime" and "compute_advantages must return a torch.Tensor, got list" in failed(r)[SHAPE]


def test_randomness_fails_determinism(reports):
    assert "different results on two calls" in failed(reports["random"])[DETERMINISM]


def test_reshaping_to_groups_fails_on_non_contiguous_groups(reports):
    f = failed(reports["reshapes"])
    assert list(f) == [LAYOUT] and "not by reshaping to [P, G]" in f[LAYOUT]


def test_an_exception_is_reported_with_the_candidates_line(reports):
    r = reports["raises"]
    assert r["stage"] == "runtime"
    assert "compute_advantages raised ZeroDivisionError: no groups (candidate:raises line 5: `raise ZeroDivisionError" \
           in r["errors"][0]


def test_policy_losses_are_checked(reports):
    assert "no gradient" in failed(reports["bad_loss"])["policy loss is a finite scalar with a gradient"]
    assert "raising the log-prob of a token must lower the loss" in \
           failed(reports["sign_flipped_loss"])["claim: loss_sign"]


def test_a_bad_config_is_a_load_failure(reports):
    r = reports["bad_config"]
    assert r["stage"] == "load" and "bad CONFIG" in r["errors"][0]


def test_behaviour_identifies_sources_that_do_the_same_thing(reports):
    b = {k: reports[k]["behaviour"] for k in ("grpo", "grpo_reworded", "dr_grpo", "av_grpo", "flipped")}
    assert b["grpo"] == b["grpo_reworded"] != ""
    assert len({b["grpo"], b["dr_grpo"], b["av_grpo"], b["flipped"]}) == 4


@pytest.mark.parametrize("config", ["{'kl_coef': '0.1'}", "{'entropy_coef': [1]}", "{'clip_high': float('nan')}",
                                    "{'eps': True}"])
def test_a_config_that_is_not_numbers_is_a_load_failure(config):
    rep = verify(f"CONFIG = {config}\n" + candidate("return batch.rewards"), "cfg")
    assert rep.stage in ("load", "static") and not rep.ok, rep
    assert any("CONFIG" in e or "must be a finite number" in e for e in rep.errors), rep.errors
