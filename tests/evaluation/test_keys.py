import pytest

from poise.evaluation.keys import METRIC_KEYS, metric_value, overall_at
from poise.evaluation.metrics import OVERALL_WEIGHTS, overall


def _result(samples=32):
    tiers = {}
    for name, (p1, p4, p32, greedy) in {"aime24": (2.0, 7.0, 40.0, None), "aime25": (3.0, 9.0, 50.0, None),
                                        "amc": (4.0, 12.0, 60.0, None), "math500": (0, 0, 0, 88.0),
                                        "minerva": (0, 0, 0, 80.0), "olympiad": (0, 0, 0, 70.0)}.items():
        if greedy is None:
            tiers[name] = {"metric": f"pass@{samples}", "score": p32, "pass@1": p1, "pass@4": p4, "samples": samples}
            if samples >= 32:
                tiers[name]["pass@32"] = p32
        else:
            tiers[name] = {"metric": "greedy", "score": greedy, "pass@1": greedy, "samples": 1}
    m = {"tiers": tiers, "weights": OVERALL_WEIGHTS}
    m["overall"] = overall({k: v["score"] for k, v in tiers.items()})
    return m


def test_overall_at_k_scores_the_sampled_tiers_at_pass_k_and_keeps_the_greedy_ones():
    m = _result()
    expect = (0.2 * 7 + 0.2 * 9 + 0.15 * 12 + 0.15 * (88 + 80 + 70))
    assert overall_at(m, 4) == pytest.approx(expect)
    assert metric_value(m, "overall@4") == pytest.approx(expect)
    assert metric_value(m, "overall@1") == pytest.approx(0.2 * 2 + 0.2 * 3 + 0.15 * 4 + 0.15 * 238)
    assert overall_at(m, 32) == pytest.approx(m["overall"])  # its own k: the paper's Overall
    assert "overall@4" in METRIC_KEYS and "overall" in METRIC_KEYS


def test_overall_at_k_needs_k_samples_and_the_weights():
    m = _result(samples=4)
    with pytest.raises(KeyError, match="aime24 has no pass@8"):
        metric_value(m, "overall@8")
    del m["weights"]
    with pytest.raises(KeyError, match="no tier weights"):
        overall_at(m, 4)
