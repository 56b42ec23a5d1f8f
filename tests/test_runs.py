import pytest
from scipy import stats

from poise.backends.tiny import EvalResult
from poise.runs import versus
from poise.sandbox.task import TIERS


def result(seed: int, overall: float, length: float) -> EvalResult:
    tiers = {t.name: {"metric": t.metric, "score": overall + i, "pass@1": 2.0 + seed, "validity": 90.0, "length": length}
             for i, t in enumerate(TIERS)}
    return EvalResult(algorithm="a", seed=seed, fidelity="smoke", metrics={"tiers": tiers, "overall": overall, "length": length,
                                                            "validity": 90.0}, trajectory=[], wall_s=1.0)


def test_versus_is_welchs_interval_of_the_difference_on_unmatched_seeds():
    a = [result(0, 65.8, 62.0), result(1, 64.6, 63.0), result(2, 67.8, 61.5)]
    b = [result(0, 63.0, 54.0), result(1, 63.3, 55.0), result(2, 63.8, 54.5), result(3, 62.7, 54.2)]
    d = versus(a, b)
    for key, get in (("overall", lambda r: r.metrics["overall"]), ("length", lambda r: r.metrics["length"])):
        ci = stats.ttest_ind([get(r) for r in a], [get(r) for r in b], equal_var=False).confidence_interval(0.95)
        assert d[key]["lo"] == pytest.approx(ci.low) and d[key]["hi"] == pytest.approx(ci.high)
    assert d["olympiad"]["mean"] == pytest.approx(d["overall"]["mean"])  # tier score = overall + its index in both
    assert d["validity"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 3, "std": 0.0, "method": "Welch"}
    assert d["overall"]["method"] == "Welch"  # the seeds differ (the start has a fourth): unpaired


def test_versus_is_paired_on_matched_seeds():
    # the same seeds on both sides: the differences per seed decide, so a shared seed effect cancels
    a = [result(0, 65.8, 62.0), result(1, 64.6, 63.0), result(2, 67.8, 61.5)]
    b = [result(2, 66.9, 54.5), result(0, 64.9, 54.0), result(1, 63.5, 55.0)]  # another order: matched by seed
    d = versus(a, b)
    ci = stats.ttest_rel([65.8, 64.6, 67.8], [64.9, 63.5, 66.9]).confidence_interval(0.95)
    assert d["overall"]["method"] == "paired"
    assert d["overall"]["lo"] == pytest.approx(ci.low) and d["overall"]["hi"] == pytest.approx(ci.high)
    assert d["overall"]["lo"] > 0  # +0.9, +1.1, +0.9: separated, where Welch on the same values is not
    welch = stats.ttest_ind([65.8, 64.6, 67.8], [64.9, 63.5, 66.9], equal_var=False).confidence_interval(0.95)
    assert welch.low < 0
