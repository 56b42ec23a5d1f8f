"""Detectors and parent comparisons on synthetic curves: each one fires on its pattern and stays quiet
on a healthy run."""

import math

import pytest

from poise.evaluation.metrics import diff_ci
from poise.reflect import curves as C
from poise.reflect.compare import compare
from poise.reflect.curves import Finding, detect_all
from tests.reflect.synth import metrics, ramp, run


def tags(traj):
    return [f.tag for f in detect_all(traj)]


def only(traj, tag):
    fs = [f for f in detect_all(traj) if f.tag == tag]
    return fs[0] if fs else None


# --- helpers ---------------------------------------------------------------------------------------


def test_window_scales_with_length():
    assert C.window(100) == 10 and C.window(300) == 30 and C.window(3) == 1


def test_smooth_is_a_trailing_moving_average():
    assert C.smooth([0, 2, 4, 6], 2) == [0, 1, 3, 5]
    assert C.smooth([5.0] * 50) == [5.0] * 50


def test_slopes_are_least_squares():
    line = [2 * i + 1 for i in range(20)]
    assert C.slope(line) == pytest.approx(2.0)
    up, down = C.half_slopes(list(range(10)) + list(range(10, 0, -1)))
    assert up > 0 > down
    assert C.last_half_gain(line) == pytest.approx(2.0 * 9)


def test_mean_trajectory_averages_truncates_and_keeps_nan():
    a, b = run(10, accuracy=ramp(0.0, 0.9)), run(8, accuracy=ramp(1.0, 1.0))
    b[3]["loss"] = float("nan")
    m = C.mean_trajectory([a, b])
    assert len(m) == 8
    assert m[0]["accuracy"] == pytest.approx(0.5)
    assert math.isnan(m[3]["loss"])


def test_a_healthy_run_fires_nothing():
    assert tags(run()) == []


# --- detectors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_anywhere_fires(bad):
    traj = run()
    traj[37]["grad_norm"] = bad
    f = only(traj, "nan")
    assert f and f.severity == 1.0 and "grad_norm" in f.evidence and "step 37" in f.evidence
    assert only(run(), "nan") is None


def test_entropy_collapse_fires_past_the_reference_sharpening_only():
    assert only(run(entropy=ramp(0.3, 0.03)), "entropy_collapse") is not None  # to 10% of its start
    assert only(run(entropy=ramp(0.3, 0.13)), "entropy_collapse") is None  # to ~45%, like reference GRPO
    assert only(run(entropy=lambda t: 0.3), "entropy_collapse") is None
    low = only(run(entropy=ramp(0.03, 0.012)), "entropy_collapse")  # 40% of start but under the floor
    assert low is not None and "0.012" in low.evidence


def test_entropy_collapse_severity_grows_with_depth():
    mild = only(run(entropy=ramp(0.3, 0.06)), "entropy_collapse")
    deep = only(run(entropy=ramp(0.3, 0.005)), "entropy_collapse")
    assert 0.0 <= mild.severity < deep.severity <= 1.0


def test_entropy_blowup():
    assert only(run(entropy=ramp(0.3, 0.6)), "entropy_blowup") is not None
    assert only(run(entropy=lambda t: 0.3), "entropy_blowup") is None


def test_reward_plateau_fires_when_the_last_half_is_flat():
    flat_late = lambda t: 0.2 + 0.5 * min(t, 0.5)  # rises, then flat from the middle
    f = only(run(accuracy=flat_late), "reward_plateau")
    assert f is not None and "last 50 steps" in f.evidence
    assert only(run(accuracy=ramp(0.2, 0.5)), "reward_plateau") is None
    assert only(run(accuracy=lambda t: 0.97), "reward_plateau") is None  # saturated: nothing to gain


def test_reward_decline_and_not_plateau_on_a_falling_curve():
    t = tags(run(accuracy=ramp(0.4, 0.1)))
    assert "reward_decline" in t and "reward_plateau" not in t
    assert "reward_decline" not in tags(run())


def test_reward_falls_back_to_reward_when_accuracy_is_absent():
    traj = [{k: v for k, v in r.items() if k != "accuracy"} for r in run(reward=ramp(0.4, 0.1))]
    assert "reward_decline" in tags(traj)


def test_length_drift_up_and_down():
    up = only(run(response_length=ramp(30, 36)), "length_drift_up")
    assert up is not None and "+" in up.evidence
    assert only(run(response_length=ramp(30, 24)), "length_drift_down") is not None
    t = tags(run(response_length=ramp(30, 31.5)))  # +5%
    assert "length_drift_up" not in t and "length_drift_down" not in t


def _with_spikes(key, steps, factor, traj=None):
    traj = traj or run()
    for s in steps:
        traj[s][key] = traj[s][key] * factor
    return traj


def test_instability_from_grad_norm_spikes():
    f = only(_with_spikes("grad_norm", [40, 70], 5.0), "instability")
    assert f is not None and "grad_norm" in f.evidence and "step 40" in f.evidence
    assert only(_with_spikes("grad_norm", [40], 5.0), "instability") is None  # one moderate spike: noise
    assert only(_with_spikes("grad_norm", [40], 10.0), "instability") is not None  # one huge spike


def test_instability_from_kl_spikes_needs_a_real_kl():
    traj = run(kl=lambda t: 0.1)
    assert only(_with_spikes("kl", [30, 60], 6.0, traj), "instability") is not None
    # KL growing from exactly 0 is many-fold "spikes" over its median, but tiny: not instability.
    assert only(run(kl=lambda t: 0.04 * t ** 3), "instability") is None


def test_instability_from_growing_loss_oscillation():
    growing = [-0.05 + (0.01 if i < 50 else 0.08) * math.sin(1.7 * i) for i in range(100)]
    f = only(run(loss=growing), "instability")
    assert f is not None and "loss" in f.evidence


def test_kl_blowup():
    assert only(run(kl=ramp(0.0, 1.5)), "kl_blowup") is not None
    assert only(run(kl=ramp(0.0, 0.05)), "kl_blowup") is None


def test_validity_drop():
    assert only(run(validity=ramp(0.99, 0.85)), "validity_drop") is not None
    assert only(run(validity=ramp(0.99, 0.97)), "validity_drop") is None


def test_many_zero_std_groups():
    f = only(run(zero_std_groups=lambda t: 0.7), "many_zero_std_groups")
    assert f is not None and "70%" in f.evidence
    assert only(run(zero_std_groups=lambda t: 0.3), "many_zero_std_groups") is None


def test_truncation_high_or_rising():
    assert only(run(truncated=ramp(0.0, 0.1)), "truncation") is not None
    assert only(run(truncated=lambda t: 0.08), "truncation") is not None
    assert only(run(), "truncation") is None


def test_weak_signal_absolute_or_faded():
    assert only(run(adv_abs_mean=ramp(0.6, 0.02)), "weak_signal") is not None
    assert only(run(adv_abs_mean=ramp(0.6, 0.1)), "weak_signal") is not None  # faded to 1/6 of its start
    assert only(run(adv_abs_mean=lambda t: 0.2), "weak_signal") is None  # small but steady (Dr. GRPO-like)


def test_a_smoke_run_reads_levels_but_not_trends():
    smoke = run(3, entropy=ramp(0.3, 0.001), accuracy=ramp(0.5, 0.0), zero_std_groups=lambda t: 0.9)
    t = tags(smoke)
    assert "entropy_collapse" not in t and "reward_decline" not in t
    assert "many_zero_std_groups" in t
    smoke[1]["loss"] = float("nan")
    assert "nan" in tags(smoke)


def test_every_tag_is_in_the_vocabulary_and_severity_in_range():
    broken = run(entropy=ramp(0.3, 0.6), kl=ramp(0, 2), accuracy=ramp(0.4, 0.0), validity=ramp(1, 0.5),
                 zero_std_groups=lambda t: 0.95, adv_abs_mean=ramp(0.5, 0.0), truncated=ramp(0, 0.5),
                 response_length=ramp(30, 10))
    broken[5]["loss"] = float("nan")
    fs = detect_all(broken)
    assert len(fs) >= 8
    for f in fs:
        assert f.tag in C.TAGS and 0.0 <= f.severity <= 1.0 and f.evidence


# --- comparisons with the parent -------------------------------------------------------------------


def ctags(fs):
    return {f.tag: f for f in fs}


def test_overall_up_down_flat_with_the_default_tolerance():
    p = metrics(90.0)
    assert "overall_up" in ctags(compare(run(), metrics(93.0), run(), p))
    assert "overall_down" in ctags(compare(run(), metrics(87.0), run(), p))
    flat = ctags(compare(run(), metrics(91.0), run(), p))
    assert "overall_flat" in flat and "default noise ±1.5" in flat["overall_flat"].evidence


def test_a_ci_replaces_the_default_tolerance():
    p = metrics(90.0)
    assert "overall_flat" in ctags(compare(run(), metrics(93.0), run(), p, ci=4.0))
    assert "overall_up" in ctags(compare(run(), metrics(91.0), run(), p, ci=0.5))
    d = diff_ci([95.0, 95.5, 94.5], [90.0, 90.5, 89.5])  # a metrics.CI object
    up = ctags(compare(run(), metrics(95.0), run(), p, ci=d))
    assert "overall_up" in up and "seed CI" in up["overall_up"].evidence
    # a mapping per metric; an undefined (one-seed, nan) half-width falls back to the default
    assert "overall_flat" in ctags(compare(run(), metrics(92.0), run(), p, ci={"overall": 3.0}))
    assert "overall_up" in ctags(compare(run(), metrics(92.0), run(), p, ci={"overall": float("nan")}))


def test_hard_up_and_down_use_hard_pass1():
    p = metrics(90.0, pass1=20.0)
    assert "hard_up" in ctags(compare(run(), metrics(90.0, pass1=24.0), run(), p))
    assert "hard_down" in ctags(compare(run(), metrics(90.0, pass1=16.0), run(), p))
    c = ctags(compare(run(), metrics(90.0, pass1=21.0), run(), p))
    assert "hard_up" not in c and "hard_down" not in c
    assert "hard_down" not in ctags(compare(run(), metrics(90.0, pass1=16.0), run(), p, ci={"hard": 5.0}))


def test_length_shorter_and_longer_are_relative():
    p = metrics(length=40.0)
    assert "length_shorter" in ctags(compare(run(), metrics(length=30.0), run(), p))
    assert "length_longer" in ctags(compare(run(), metrics(length=48.0), run(), p))
    c = ctags(compare(run(), metrics(length=41.0), run(), p))
    assert "length_shorter" not in c and "length_longer" not in c


def test_entropy_against_the_parent_at_the_end():
    parent = run(entropy=ramp(0.27, 0.10))
    assert "entropy_higher" in ctags(compare(run(entropy=ramp(0.27, 0.16)), metrics(), parent, metrics()))
    assert "entropy_lower" in ctags(compare(run(entropy=ramp(0.27, 0.05)), metrics(), parent, metrics()))
    c = ctags(compare(run(entropy=ramp(0.27, 0.105)), metrics(), parent, metrics()))
    assert "entropy_higher" not in c and "entropy_lower" not in c


def test_per_tier_names_the_tiers_that_moved_most_first():
    c = ctags(compare(run(), metrics(shift={"aime25": 6.0, "amc": -4.0, "minerva": 1.0}), run(), metrics()))
    ev = c["per_tier"].evidence
    assert ev.index("aime25 +6.0") < ev.index("amc -4.0") and "minerva" not in ev
    assert "per_tier" not in ctags(compare(run(), metrics(shift={"amc": 1.5}), run(), metrics()))


def test_compare_skips_what_is_missing():
    assert compare([], {}, [], {}) == []
    assert [f.tag for f in compare([], {"overall": 92.0}, [], {"overall": 90.0})] == ["overall_up"]


def test_finding_round_trips():
    f = Finding("nan", 1.0, "x")
    assert Finding.from_dict(f.to_dict()) == f
