"""Benchmark metrics: unbiased pass@k, the paper's weighted Overall, and confidence intervals over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

# Overall weights from the paper: AIME24/AIME25 0.20 each; AMC, MATH-500, Minerva, OlympiadBench 0.15 each.
OVERALL_WEIGHTS = {"aime24": 0.20, "aime25": 0.20, "amc": 0.15, "math500": 0.15, "minerva": 0.15, "olympiad": 0.15}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, the Codex paper):
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k < 1 or k > n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples (n={n})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean over problems of pass@k, from (n, c) per problem."""
    vals = [pass_at_k(n, c, k) for n, c in counts]
    return sum(vals) / len(vals) if vals else float("nan")


def overall(scores: dict[str, float], weights: dict[str, float] = OVERALL_WEIGHTS) -> float:
    """The paper's weighted Overall of per-tier scores (same units as the scores)."""
    missing = set(weights) - set(scores)
    if missing:
        raise ValueError(f"Overall needs every tier; missing {sorted(missing)}")
    return sum(w * scores[t] for t, w in weights.items()) / sum(weights.values())


def t_critical(df: float, level: float = 0.95) -> float:
    """The two-sided ``level`` critical value of Student's t with ``df`` degrees of freedom (df may be
    fractional, as Welch-Satterthwaite's is). Seed counts are small, so a normal 1.96 would make the
    intervals too narrow."""
    if not df > 0:
        return float("nan")
    from scipy import stats  # imported here: scipy.stats costs ~0.3 s, which every CLI command would pay

    return float(stats.t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class CI:
    """Mean and two-sided 95% t-interval over seeds. With one seed the interval is undefined (nan)."""

    mean: float
    lo: float
    hi: float
    n: int
    std: float
    method: str = ""  # for a difference: "paired" (matched seeds) or "Welch" (unmatched)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def __str__(self) -> str:
        if self.n < 2 or math.isnan(self.half_width):
            return f"{self.mean:.1f}"
        return f"{self.mean:.1f} ± {self.half_width:.1f}"

    def to_dict(self) -> dict:
        d = {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n, "std": self.std}
        return {**d, "method": self.method} if self.method else d


def mean_ci(values: Sequence[float]) -> CI:
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mu = sum(vals) / n
    if n == 1:
        return CI(mu, float("nan"), float("nan"), 1, float("nan"))
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1))
    h = t_critical(n - 1) * sd / math.sqrt(n)
    return CI(mu, mu - h, mu + h, n, sd)


def diff_ci(a: Sequence[float], b: Sequence[float]) -> CI:
    """CI of mean(a) - mean(b) for independent seed samples (Welch's t-interval)."""
    ca, cb = mean_ci(a), mean_ci(b)
    if ca.n < 2 or cb.n < 2:
        return CI(ca.mean - cb.mean, float("nan"), float("nan"), min(ca.n, cb.n), float("nan"))
    va, vb = ca.std ** 2 / ca.n, cb.std ** 2 / cb.n
    se = math.sqrt(va + vb)
    if se == 0:
        return CI(ca.mean - cb.mean, ca.mean - cb.mean, ca.mean - cb.mean, min(ca.n, cb.n), 0.0, "Welch")
    df = (va + vb) ** 2 / ((va ** 2) / (ca.n - 1) + (vb ** 2) / (cb.n - 1))  # Welch-Satterthwaite, unrounded
    h = t_critical(df) * se
    d = ca.mean - cb.mean
    return CI(d, d - h, d + h, min(ca.n, cb.n), se, "Welch")


def paired_ci(a: Sequence[float], b: Sequence[float]) -> CI:
    """CI of the mean of a_i - b_i over matched seeds (a t-interval on the differences, n - 1 df). With common
    random numbers (`poise.sandbox.noise`) the two arms at one seed share their evaluation's noise and the
    training's draws, which the differences cancel; std is the standard error, as in `diff_ci`."""
    if len(a) != len(b):
        raise ValueError(f"a paired interval needs matched seeds: {len(a)} values against {len(b)}")
    c = mean_ci([x - y for x, y in zip(a, b)])
    se = c.std / math.sqrt(c.n) if c.n >= 2 else float("nan")
    return CI(c.mean, c.lo, c.hi, c.n, se, "paired")


def seed_diff_ci(a: dict[int, float], b: dict[int, float]) -> CI:
    """CI of mean(a) - mean(b) from values by seed: paired on the seeds both have when they have the same seeds
    (at least 2), Welch otherwise. ``method`` says which."""
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        return paired_ci([a[s] for s in seeds], [b[s] for s in seeds])
    return diff_ci(list(a.values()), list(b.values()))
