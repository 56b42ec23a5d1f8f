"""Synthetic trajectories and metrics for the reflection tests.

``run()`` is a healthy 100-step run shaped like the real reference GRPO (accuracy rising, entropy
sharpening to about half its start, KL growing slowly, no spikes), with small deterministic wiggles so
the detectors see realistic, not perfectly flat, curves. Each test overrides the curve it is about.
"""

import math

HARD = ("aime24", "aime25", "amc")
EASY = ("math500", "minerva", "olympiad")


def _healthy(i: int, n: int) -> dict:
    t = i / max(1, n - 1)
    w = math.sin(1.7 * i)  # a deterministic wiggle
    return {
        "step": i,
        "reward": 0.30 + 0.15 * t + 0.01 * w,
        "accuracy": 0.30 + 0.15 * t + 0.01 * w,
        "validity": 0.99,
        "entropy": 0.27 - 0.14 * t,
        "response_length": 30.0 + 0.5 * w,
        "kl": 0.03 * t,
        "clip_frac": 0.001,
        "grad_norm": 0.6 + 0.05 * w,
        "loss": -0.05 + 0.01 * w,
        "adv_abs_mean": 0.65,
        "zero_std_groups": 0.15,
        "truncated": 0.0,
        "sampled_tokens": 4000,
        "sample_s": 1.0,
        "step_s": 2.0,
    }


def run(n: int = 100, **curves) -> list[dict]:
    """A trajectory of n rows; each keyword is a curve: a list of n values or a function of t in [0, 1]."""
    rows = [_healthy(i, n) for i in range(n)]
    for key, c in curves.items():
        for i, r in enumerate(rows):
            r[key] = c[i] if isinstance(c, (list, tuple)) else c(i / max(1, n - 1))
    return rows


def ramp(a: float, b: float):
    """A straight line from a (t=0) to b (t=1)."""
    return lambda t: a + (b - a) * t


def metrics(overall: float = 90.0, pass1: float = 20.0, length: float = 40.0, validity: float = 99.0,
            shift: dict | None = None) -> dict:
    """Held-out metrics in the benchmark's shape. ``shift`` adds points to individual tier scores."""
    shift = shift or {}
    tiers = {}
    for t in HARD:
        tiers[t] = {"metric": "pass@32", "pass@1": pass1, "score": 95.0 + shift.get(t, 0.0), "validity": validity,
                    "length": length}
    for t in EASY:
        tiers[t] = {"metric": "greedy", "pass@1": 85.0 + shift.get(t, 0.0), "score": 85.0 + shift.get(t, 0.0),
                    "validity": validity, "length": length}
    return {"tiers": tiers, "overall": overall, "length": length, "validity": validity}
