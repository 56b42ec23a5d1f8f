"""The reflection: verdicts, suggestions, the diagnosis text, multi-seed input, determinism, JSON, and
the digest for proposers."""

import json

from poise.reflect import SUGGESTIONS, Reflection, evidence_digest, reflect
from poise.reflect.curves import Finding
from poise.reflect.diagnose import VERDICTS, read_objective
from tests.reflect.synth import metrics, ramp, run

PROPOSAL = {"name": "XG-GRPO", "mechanism": "scale each group's advantage by its pass-rate entropy"}


def parent(overall=90.0, pass1=20.0, length=40.0, traj=None):
    return {"name": "GRPO", "trajectory": traj or run(), "metrics": metrics(overall, pass1, length)}


def tags(r: Reflection):
    return set(r.tags())


# --- verdicts --------------------------------------------------------------------------------------


def test_improved_is_keep():
    r = reflect(PROPOSAL, run(), metrics(94.0, 23.0), parent())
    assert r.verdict == "keep" and "overall_up" in tags(r)
    assert any(w.startswith("overall_up") for w in r.worked) and "keep_mechanism" in r.suggestions


def test_worse_is_drop_with_revert():
    r = reflect(PROPOSAL, run(), metrics(86.0, 17.0), parent())
    assert r.verdict == "drop" and "revert" in r.suggestions
    assert any(f.startswith("overall_down") for f in r.failed)


def test_no_effect_is_fix():
    r = reflect(PROPOSAL, run(), metrics(90.5), parent())
    assert r.verdict == "fix" and "overall_flat" in tags(r)
    assert "no measurable" in r.diagnosis


def test_better_accuracy_but_longer_under_a_concise_objective_is_fix():
    child = metrics(94.0, 23.0, length=50.0)
    concise = reflect(PROPOSAL, run(), child, parent(), "Be concise: shorter answers at equal accuracy")
    assert concise.verdict == "fix" and "length_shaping" in concise.suggestions
    assert any(f.startswith("length_longer") for f in concise.failed)
    # the same result under an accuracy-only objective is a keep: the objective decides
    plain = reflect(PROPOSAL, run(), child, parent(), "maximise Overall")
    assert plain.verdict == "keep" and "length_shaping" not in plain.suggestions


def test_shorter_at_equal_accuracy_is_keep_under_a_concise_objective():
    r = reflect(PROPOSAL, run(), metrics(90.3, length=30.0), parent(), "reduce response length")
    assert r.verdict == "keep" and any(w.startswith("length_shorter") for w in r.worked)


def test_shorter_but_less_accurate_suggests_a_correctness_gate():
    r = reflect(PROPOSAL, run(), metrics(87.0, 17.5, length=28.0), parent(), "concise answers")
    assert r.verdict == "fix" and "correctness_gate_length" in r.suggestions
    assert "DCBE" in r.diagnosis
    severe = reflect(PROPOSAL, run(), metrics(75.0, 8.0, length=28.0), parent(), "concise answers")
    assert severe.verdict == "drop"


def test_hard_objective_judges_by_hard_pass1():
    r = reflect(PROPOSAL, run(), metrics(90.5, pass1=24.0), parent(), "improve pass@1 on the hard tiers")
    assert r.verdict == "keep"
    assert reflect(PROPOSAL, run(), metrics(90.5, pass1=24.0), parent()).verdict == "fix"  # Overall flat


def test_nan_is_drop():
    traj = run()
    traj[50]["loss"] = float("nan")
    r = reflect(PROPOSAL, traj, metrics(94.0), parent())
    assert r.verdict == "drop" and "nan" in tags(r) and r.suggestions[0] == "revert"


def test_improved_but_collapsed_entropy_is_fix_and_flat_with_collapse_is_drop():
    collapsed = run(entropy=ramp(0.3, 0.01))
    r = reflect(PROPOSAL, collapsed, metrics(94.0), parent())
    assert r.verdict == "fix" and {"entropy_bonus", "clip_higher"} <= set(r.suggestions)
    assert "entropy_collapse" in r.diagnosis
    assert reflect(PROPOSAL, collapsed, metrics(90.0), parent()).verdict == "drop"


def test_without_a_parent_the_verdict_judges_trainability():
    assert reflect(PROPOSAL, run(), metrics()).verdict == "keep"
    assert reflect(PROPOSAL, run(kl=ramp(0, 2.0)), metrics()).verdict == "fix"
    assert reflect(PROPOSAL, run(accuracy=ramp(0.4, 0.05)), metrics()).verdict == "drop"
    assert "no parent" in reflect(PROPOSAL, run(), metrics()).diagnosis


def test_a_run_with_nothing_logged_is_dropped():
    r = reflect(PROPOSAL, [], None)
    assert r.verdict == "drop" and "missing" in tags(r)


# --- suggestions -----------------------------------------------------------------------------------


def test_many_zero_std_groups_suggests_handling_degenerate_groups():
    r = reflect(PROPOSAL, run(zero_std_groups=lambda t: 0.7), metrics(90.0), parent())
    assert "handle_degenerate_groups" in r.suggestions
    assert "handle_degenerate_groups" not in reflect(PROPOSAL, run(), metrics(90.0), parent()).suggestions


def test_concise_objective_with_unchanged_length_suggests_length_shaping():
    r = reflect(PROPOSAL, run(), metrics(90.0, length=40.5), parent(length=40.0), "make answers concise")
    assert "length_shaping" in r.suggestions
    assert "length_shaping" not in reflect(PROPOSAL, run(), metrics(90.0, length=40.5), parent(length=40.0)).suggestions


def test_instability_validity_truncation_and_weak_signal_hints():
    spiky = run()
    for s in (30, 60):
        spiky[s]["grad_norm"] *= 6
    assert {"smaller_step", "sequence_level_agg"} <= set(reflect(PROPOSAL, spiky, metrics(), parent()).suggestions)
    assert "validity_masking" in reflect(PROPOSAL, run(), metrics(validity=96.0), parent()).suggestions
    assert "overlong_shaping" in reflect(PROPOSAL, run(truncated=ramp(0, 0.1)), metrics(), parent()).suggestions
    assert "analytic_variance" in reflect(PROPOSAL, run(adv_abs_mean=ramp(0.5, 0.02)), metrics(), parent()).suggestions


def test_symptoms_of_a_decline_do_not_become_hints():
    # A run that learns to be wrong: all-wrong groups and a dead signal follow from the decline.
    broken = run(accuracy=ramp(0.3, 0.0), zero_std_groups=lambda t: 0.9, adv_abs_mean=ramp(0.5, 0.01),
                 kl=ramp(0, 1.5))
    r = reflect(PROPOSAL, broken, metrics(10.0, 1.0, length=20.0), parent())
    assert r.verdict == "drop"
    assert "revert" in r.suggestions and "kl_anchor" in r.suggestions
    assert not {"handle_degenerate_groups", "analytic_variance", "correctness_gate_length"} & set(r.suggestions)


def test_suggestions_come_from_the_vocabulary_in_its_order():
    broken = run(entropy=ramp(0.3, 0.01), kl=ramp(0, 2.0), zero_std_groups=lambda t: 0.8,
                 truncated=ramp(0, 0.2), validity=ramp(0.99, 0.8))
    r = reflect(PROPOSAL, broken, metrics(85.0, length=50.0), parent(), "concise")
    order = list(SUGGESTIONS)
    assert r.suggestions and all(s in SUGGESTIONS for s in r.suggestions)
    assert r.suggestions == sorted(r.suggestions, key=order.index)
    assert r.verdict in VERDICTS


# --- the text --------------------------------------------------------------------------------------


def test_diagnosis_names_the_change_curves_benchmarks_hypothesis_and_next_steps():
    r = reflect(PROPOSAL, run(zero_std_groups=lambda t: 0.7), metrics(94.0, shift={"aime25": 8.0}), parent())
    d = r.diagnosis
    assert "XG-GRPO" in d and "pass-rate entropy" in d and "GRPO" in d
    assert "training accuracy went from" in d and "entropy went from" in d
    assert "aime25 +8.0" in d and "Overall 94.0 vs parent 90.0" in d
    assert "Hypothesis" in d and "correlational" in d
    assert "For children:" in d and "all-correct and all-wrong groups" in d
    for overclaim in ("caused", "proves", "because of the mechanism"):
        assert overclaim not in d.lower()
    assert "\n" not in r.summary and r.summary.startswith(r.verdict)


def test_a_smoke_run_is_read_with_care():
    r = reflect(PROPOSAL, run(3), metrics(90.0), parent())
    assert "trends are not read" in r.diagnosis and r.verdict in VERDICTS
    assert "No level check fired" in r.diagnosis and "plateau" not in r.diagnosis


def test_objective_reading():
    assert read_objective("Make responses more concise").concise
    assert read_objective("improve AIME pass@1").hard
    o = read_objective("maximise Overall")
    assert not o.concise and not o.hard


# --- seeds, determinism, JSON ------------------------------------------------------------------------


def test_multi_seed_curves_are_averaged():
    seeds = [run(zero_std_groups=lambda t, z=z: z) for z in (0.9, 0.6, 0.3)]  # mean 0.6
    r = reflect(PROPOSAL, seeds, [metrics(90.0)] * 3, parent())
    assert "many_zero_std_groups" in tags(r)
    assert "60%" in next(f for f in r.findings if f.tag == "many_zero_std_groups").evidence
    one = reflect(PROPOSAL, seeds[2], metrics(90.0), parent())
    assert "many_zero_std_groups" not in tags(one)
    assert "3 seeds" in r.diagnosis


def test_a_nan_in_one_seed_is_not_averaged_away():
    seeds = [run(), run(), run(40)]
    seeds[0][80]["kl"] = float("nan")  # beyond the shortest seed, so outside the average
    r = reflect(PROPOSAL, seeds, [metrics()] * 3, parent())
    assert "nan" in tags(r) and r.verdict == "drop"


def test_seed_spread_sets_the_noise():
    p_seeds = {"name": "GRPO", "trajectory": [run()] * 3, "metrics": [metrics(o) for o in (89.0, 93.0, 91.0)]}
    noisy = reflect(PROPOSAL, [run()] * 3, [metrics(o) for o in (90.0, 97.0, 92.0)], p_seeds)
    assert "overall_flat" in tags(noisy)  # +2 points, but the seeds disagree by several
    p_tight = {"name": "GRPO", "trajectory": [run()] * 3, "metrics": [metrics(o) for o in (90.9, 91.0, 91.1)]}
    tight = reflect(PROPOSAL, [run()] * 3, [metrics(o) for o in (91.9, 92.0, 92.1)], p_tight)
    assert "overall_up" in tags(tight)  # +1 point only, but the seeds agree (default band would say flat)
    assert "seed CI" in next(f for f in tight.findings if f.tag == "overall_up").evidence


def test_deterministic():
    args = (PROPOSAL, [run(entropy=ramp(0.3, 0.02)), run()], [metrics(93.0), metrics(94.0)], parent())
    a, b = reflect(*args), reflect(*args)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_json_round_trip():
    r = reflect(PROPOSAL, run(zero_std_groups=lambda t: 0.7), metrics(94.0), parent(), "concise")
    back = Reflection.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and isinstance(back.findings[0], Finding)


# --- digest ----------------------------------------------------------------------------------------


def _r(verdict, severity, summary):
    return Reflection(findings=[Finding("overall_up" if verdict == "keep" else "overall_down", severity, "e")],
                      verdict=verdict, summary=summary, suggestions=["revert"] if verdict == "drop" else [])


def test_digest_puts_keep_and_drop_before_fix_and_respects_the_limit():
    refl = [("a", _r("fix", 0.9, "fix: a")), ("b", _r("drop", 0.5, "drop: b")), ("c", _r("keep", 0.8, "keep: c")),
            ("d", _r("fix", 0.2, "fix: d"))]
    text = evidence_digest(refl, limit=3)
    lines = text.splitlines()
    body = [l for l in lines if l.startswith("- ")]
    assert [l.split(":")[0] for l in body] == ["- c", "- b", "- a"]
    assert "next: revert" in body[1]
    assert "1 more omitted: 1 fix" in lines[-1]
    assert evidence_digest([], 5) == "No past reflections."


def test_digest_of_real_reflections_reads_in_one_line_each():
    keep = reflect(PROPOSAL, run(), metrics(94.0), parent())
    drop = reflect({"name": "Bad"}, run(kl=ramp(0, 2.0), accuracy=ramp(0.4, 0.0)), metrics(40.0), parent())
    text = evidence_digest([("XG-GRPO", keep), ("Bad", drop)], limit=5)
    assert "- XG-GRPO: keep: Overall +4.0 vs GRPO" in text and "- Bad: drop:" in text
    assert all(len(l) <= 400 for l in text.splitlines())


def test_a_suggestion_is_never_the_mechanism_the_candidate_already_has():
    """A weak signal suggests analytic-variance scaling to GRPO, but not to AV-GRPO, which already has it."""
    import dataclasses

    from poise.agents import offline

    weak = run(adv_abs_mean=ramp(0.5, 0.02))
    grpo = {"name": "GRPO", "design": dataclasses.asdict(offline.GRPO)}
    av = {"name": "AV-GRPO", "design": dataclasses.asdict(dataclasses.replace(offline.GRPO, scale="bernoulli"))}
    assert "analytic_variance" in reflect(grpo, weak, metrics(), parent()).suggestions
    r = reflect(av, weak, metrics(), parent())
    assert "analytic_variance" not in r.suggestions and SUGGESTIONS["analytic_variance"] not in r.diagnosis


def test_the_noise_band_quoted_says_where_it_comes_from():
    one = reflect(PROPOSAL, run(), metrics(91.0), parent())
    assert "(noise ±1.5, assumed: one search seed each)" in one.summary
    three = reflect(PROPOSAL, [run(), run(), run()], [metrics(91.0), metrics(91.5), metrics(92.0)],
                    {"name": "GRPO", "trajectory": [run(), run()], "metrics": [metrics(90.0), metrics(90.4)]})
    assert "95% half-width over 3 and 2 search seeds" in three.summary


def test_already_has_reads_the_design_not_the_operators_left():
    import dataclasses

    from poise.agents import offline

    def has(s, **kw):
        return offline.already_has({"design": dataclasses.asdict(dataclasses.replace(offline.GRPO, **kw))}, s)
    assert not has("kl_anchor") and not has("kl_anchor", scale="bernoulli")  # no design field holds a KL anchor
    assert not has("correctness_gate_length", length="correct") and has("correctness_gate_length", length="correct_gated")
    assert not has("handle_degenerate_groups", validity="mask") and has("handle_degenerate_groups", all_fail="push_invalid")
    assert not offline.already_has({"name": "free-form"}, "analytic_variance")
