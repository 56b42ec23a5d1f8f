import itertools
import math
import random
import statistics

import pytest
from scipy import stats as scipy_stats
from scipy.stats import t as scipy_t

from poise.evaluation.metrics import (
    OVERALL_WEIGHTS,
    diff_ci,
    mean_ci,
    mean_pass_at_k,
    overall,
    paired_ci,
    pass_at_k,
    seed_diff_ci,
    t_critical,
)


def _brute_pass_at_k(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(6, 0, 1), (6, 1, 1), (6, 1, 3), (6, 2, 4), (8, 3, 8), (7, 7, 2), (9, 2, 5)])
def test_pass_at_k_equals_the_exact_subset_probability(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_sample_mean_and_pass_at_n_is_any_correct():
    assert pass_at_k(32, 5, 1) == pytest.approx(5 / 32)
    assert pass_at_k(32, 1, 32) == 1.0 and pass_at_k(32, 0, 32) == 0.0
    assert mean_pass_at_k([(4, 1), (4, 0)], 1) == pytest.approx(0.125)


def test_pass_at_k_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 8)


def test_overall_uses_the_papers_weights():
    assert sum(OVERALL_WEIGHTS.values()) == pytest.approx(1.0)
    scores = {"aime24": 10, "aime25": 20, "amc": 30, "math500": 40, "minerva": 50, "olympiad": 60}
    assert overall(scores) == pytest.approx(0.2 * 10 + 0.2 * 20 + 0.15 * (30 + 40 + 50 + 60))
    with pytest.raises(ValueError, match="missing"):
        overall({"aime24": 1.0})


def test_mean_ci_matches_a_hand_computed_t_interval():
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.mean == 2.0 and ci.std == pytest.approx(1.0)
    assert ci.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert math.isnan(mean_ci([5.0]).half_width)


def test_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = random.Random(0)
    hits = sum(1 for _ in range(2000)
               if (lambda c: c.lo <= 0.0 <= c.hi)(mean_ci([rng.gauss(0, 1) for _ in range(4)])))
    assert 0.93 < hits / 2000 < 0.97


def test_t_critical_values():
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical(30) == pytest.approx(2.0423, abs=1e-4)
    assert 1.96 < t_critical(200) < 1.98
    assert t_critical(2.5) != t_critical(2) and t_critical(3) < t_critical(2.5) < t_critical(2)  # fractional df
    assert math.isnan(t_critical(0))


def test_welch_interval_uses_the_unrounded_satterthwaite_df():
    a, b = [1.0, 2.0, 4.0], [0.0, 0.1, 0.3, 0.2]
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    assert df != int(df)
    d = diff_ci(a, b)
    assert d.half_width == pytest.approx(scipy_t.ppf(0.975, df) * math.sqrt(va + vb))
    assert d.half_width != pytest.approx(scipy_t.ppf(0.975, int(df)) * math.sqrt(va + vb))


def test_diff_ci_separates_clearly_different_samples():
    d = diff_ci([10.0, 10.5, 9.8, 10.2], [5.0, 5.4, 4.9, 5.2])
    assert d.lo > 4.0 and d.hi < 6.0
    same = diff_ci([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert same.lo < 0 < same.hi


def test_paired_ci_is_the_t_interval_of_the_per_seed_differences():
    a, b = [65.8, 64.6, 67.8, 66.0], [64.9, 63.5, 66.9, 65.3]
    d = paired_ci(a, b)
    ci = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert d.method == "paired" and d.n == 4
    assert (d.lo, d.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert d.lo > 0 and diff_ci(a, b).lo < 0  # a shared seed effect: only the pairing sees the difference
    with pytest.raises(ValueError, match="matched seeds"):
        paired_ci(a, b[:3])


def test_seed_diff_ci_pairs_only_when_the_seeds_match():
    a = {0: 65.8, 1: 64.6, 2: 67.8}
    assert seed_diff_ci(a, {2: 66.9, 0: 64.9, 1: 63.5}).method == "paired"
    assert seed_diff_ci(a, {0: 64.9, 1: 63.5, 3: 66.9}).method == "Welch"
    assert seed_diff_ci(a, {0: 64.9, 1: 63.5, 2: 66.9, 3: 62.0}).method == "Welch"
