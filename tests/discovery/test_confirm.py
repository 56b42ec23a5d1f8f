import pytest

from poise.discovery.confirm import confirm
from poise.discovery.objective import parse_directive
from tests.report.fake_run import metrics


def _ms(overalls, lengths):
    return [metrics(o, n) for o, n in zip(overalls, lengths)]


BASE = _ms([89, 90, 91], [40, 41, 42])


def test_accuracy_needs_the_whole_interval_above_zero():
    up = confirm(1, "UP", _ms([93, 94, 95], [40, 41, 42]), BASE, parse_directive(None), [1, 2, 3])
    assert up.verdict == "discovery" and up.d_overall["lo"] > 0
    near = confirm(2, "NEAR", _ms([89, 91, 93], [40, 41, 42]), BASE, parse_directive(None), [1, 2, 3])
    assert near.d_overall["mean"] == pytest.approx(1.0) and near.verdict == "not confirmed"


def test_concise_needs_shorter_beyond_noise_and_accuracy_within_the_baselines_interval():
    obj = parse_directive("accurate and concise")
    short = confirm(1, "S", _ms([88, 89, 90], [30, 31, 32]), BASE, obj, [1, 2, 3])
    assert short.d_length["hi"] < 0 and short.verdict == "discovery"  # -1 Overall, inside GRPO's ±2.5
    costly = confirm(2, "C", _ms([80, 81, 82], [30, 31, 32]), BASE, obj, [1, 2, 3])
    assert costly.verdict == "not confirmed"  # shorter, but 9 points less accurate
    same = confirm(3, "L", _ms([89, 90, 91], [39, 41, 43]), BASE, obj, [1, 2, 3])
    assert same.verdict == "not confirmed" and "length +0.0" in same.reason


def test_a_discovery_must_clear_the_minimum_effect_not_only_zero():
    """The shipped run's case: a length cut whose interval clears 0 but not 5% of GRPO's length (41
    tokens here: 2.05) is not a discovery; a configured smaller minimum makes it one. The same for Overall."""
    import dataclasses

    obj = parse_directive("accurate and concise")
    small = _ms([89, 90, 91], [37.8, 38.0, 38.2])  # -3.0 [-5.5, -0.5] tokens: below 0, above -2.05
    v = confirm(1, "SMALL", small, BASE, obj, [1, 2, 3])
    assert v.d_length["hi"] < 0 and v.d_length["hi"] > -2.05 and v.verdict == "not confirmed"
    assert "Δ length < -2.1 tokens (5% of GRPO's)" in v.needs and v.needs in v.reason
    lax = dataclasses.replace(obj, min_effect=(("length", 0.1),))
    assert confirm(1, "SMALL", small, BASE, lax, [1, 2, 3]).verdict == "discovery"
    acc = parse_directive(None)
    cut = acc.effect("overall")
    assert cut > 0
    # paired over 3 matched seeds: +cut/2 ± 0.248 cut, so the interval is above 0 and not above +cut
    up = [metrics(m["overall"] + cut / 2 + j * cut / 10, 41) for m, j in zip(BASE, (-1, 0, 1))]
    u = confirm(2, "UP", up, BASE, acc, [1, 2, 3], [1, 2, 3])
    assert 0 < u.d_overall["lo"] < cut and u.verdict == "not confirmed" and u.needs == f"Δ Overall > +{cut:g}"
    assert confirm(2, "UP", up, BASE, dataclasses.replace(acc, min_effect=(("overall", 0.0),)), [1, 2, 3],
                   [1, 2, 3]).verdict == "discovery"
    with pytest.raises(ValueError, match="--min-effect"):
        dataclasses.replace(acc, min_effect=(("speed", 1.0),))


def test_matched_fresh_seeds_are_compared_paired():
    # the baseline and the candidate on the same fresh seeds share each seed's noise: a steady +1.5 with a
    # large shared seed effect is a discovery paired, and not with Welch, which sees only the spread
    base = _ms([86, 90, 94], [40, 41, 42])
    ms = _ms([87.5, 91.6, 95.4], [40, 41, 42])
    acc = parse_directive(None)
    paired = confirm(1, "UP", ms, base, acc, [11, 12, 13], [11, 12, 13])
    assert paired.d_overall["method"] == "paired" and paired.verdict == "discovery"
    assert "paired 95%" in paired.reason
    welch = confirm(1, "UP", ms, base, acc, [11, 12, 13])
    assert welch.d_overall["method"] == "Welch" and welch.verdict == "not confirmed"
    shifted = confirm(1, "UP", ms, base, acc, [11, 12, 13], [12, 13, 14])  # other seeds: never paired
    assert shifted.d_overall["method"] == "Welch"


def _at4(overall, p4, greedy=80.0):
    from poise.evaluation.metrics import OVERALL_WEIGHTS

    tiers = {t: {"metric": "pass@32", "pass@1": 3.0, "pass@4": p4, "score": overall, "length": 40.0}
             for t in ("aime24", "aime25", "amc")}
    tiers.update({t: {"metric": "greedy", "pass@1": greedy, "score": greedy, "length": 40.0}
                  for t in ("math500", "minerva", "olympiad")})
    return {"tiers": tiers, "overall": overall, "length": 40.0, "validity": 95.0, "weights": OVERALL_WEIGHTS}


def test_the_verdict_reads_the_accuracy_metric_the_run_ranks_on_and_reports_the_papers_overall():
    # pass@4 up by 3 points on every sampled tier (overall@4 up by 1.65), the paper's Overall unchanged
    base = [_at4(60.0 + s, 10.0 + s) for s in range(3)]
    ms = [_at4(60.0 + s, 13.0 + s) for s in range(3)]
    at4 = parse_directive(None, accuracy="overall@4")
    v = confirm(1, "P4", ms, base, at4, [1, 2, 3], [1, 2, 3])
    assert v.verdict == "discovery" and v.accuracy == "overall@4"
    assert v.d_accuracy["mean"] == pytest.approx(0.55 * 3) and v.d_overall["mean"] == pytest.approx(0.0)
    assert "overall@4 +1.7" in v.reason and "the paper's Overall +0.0" in v.reason
    plain = confirm(1, "P4", ms, base, parse_directive(None), [1, 2, 3], [1, 2, 3])
    assert plain.verdict == "not confirmed" and plain.accuracy == "overall"
    with pytest.raises(ValueError, match="ranks on one of"):
        parse_directive(None, accuracy="length")
