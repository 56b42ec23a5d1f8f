"""Cheap programmatic reading of learning curves: smoothing, slopes and detectors (`compare.py` holds the
comparisons with a parent).

A trajectory is the trainer's list of per-step rows (``poise/sandbox/trainer.py``): step, reward,
accuracy, validity, entropy, response_length, kl, clip_frac, grad_norm, loss, adv_abs_mean,
zero_std_groups, truncated, ... Every function here is pure; each detector returns a ``Finding`` or
None. The reflection (``diagnose.py``) runs these first and writes its note from what they found, as
the paper's notes recommend (section 7: detectors first, then the write-up).

Thresholds are module constants. Where a number was calibrated, it was calibrated on the real 100-step
``standard`` runs in ``benchmarks/results/signal_standard.json`` (GRPO, Dr. GRPO, RLOO, DAPO, AV-GRPO,
VM-AV-GRPO, DACE-GRPO and a sign-flipped GRPO that collapses), so that the healthy baselines stay
quiet and the broken one does not.

Conventions: training curves are fractions (accuracy 0.42, validity 0.99); held-out metrics are
percentages (Overall 93.0, validity 98.7), as ``poise/sandbox/benchmark.py`` writes them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import median
from typing import Callable

# --- smoothing and trends -------------------------------------------------------------------------

# The smoothing window is 10% of the run: 10 steps of a 100-step run, 30 of a 300-step one. One step's
# accuracy is 128 samples from 16 prompts of varying difficulty (std about 0.08 on the reference runs),
# so a single step says little; ten steps bring that to about 0.025.
SMOOTH_FRAC = 0.10
# Below this many steps the start and end windows are single noisy points (a smoke run has 3), so
# trend detectors stay silent and only level detectors (NaN, KL level, zero-std groups, ...) speak.
MIN_TREND_STEPS = 6

# --- detector thresholds --------------------------------------------------------------------------

# Entropy collapse: the end of the run below this fraction of its start, or below an absolute floor.
# Not 0.5: every healthy reference run (GRPO and all its variants) ends at 0.34-0.47 of its start
# entropy while accuracy is still rising; sharpening is what RL on a pretrained policy does. 0.25 marks
# collapse well beyond that. "Healthier entropy than the parent" is read by `compare` instead.
ENTROPY_COLLAPSE_FRAC = 0.25
ENTROPY_FLOOR = 0.02  # nats per token: the policy is then nearly deterministic, exploration is over
# Entropy blow-up: the end above 1.5x the start. The reference runs never rise; the sign-flipped run,
# which learns to be wrong, ends at 1.56-1.64x.
ENTROPY_BLOWUP_FRAC = 1.5

# Reward plateau: training accuracy gains less than 2 points over the last half (least-squares fit).
# On one seed the fit's standard error is about 4 points, so a single-seed plateau is weak evidence;
# the severity stays low near the threshold for that reason.
PLATEAU_GAIN = 0.02
SATURATED_ACC = 0.95  # no plateau is reported at the ceiling: there is nothing left to gain
# Reward decline: the smoothed end below the smoothed start by more than 2 points.
DECLINE_TOL = 0.02

# Length drift: mean response length moves more than 10% start to end. The reference runs all grow
# 27-49%, so length_drift_up is normal here and is treated as a fact to report, not a failure, unless
# the objective asks for short answers.
LENGTH_DRIFT = 0.10

# Instability: a point more than SPIKE_K x the median of the preceding window. Healthy runs reach
# 2-3.5x on grad_norm; one reference run has a single 7x grad-norm spike and trains normally, so one
# spike fires only past 2 x SPIKE_K, otherwise it takes SPIKE_MIN_COUNT of them.
SPIKE_K = 4.0
SPIKE_MIN_COUNT = 2
SPIKE_MIN_HISTORY = 5  # steps of history before a running median means anything
# KL starts at exactly 0 (the policy is the reference) and rises by orders of magnitude in every run,
# so a KL spike counts only above this level (the reference runs peak at 0.05-0.12).
KL_SPIKE_FLOOR = 0.05
# Gradient norms below this are small steps whatever their ratio (the trainer clips at 1.0); this keeps
# a run whose signal has died (median 0) from reporting every tiny gradient as a spike.
GRAD_SPIKE_FLOOR = 0.1
# Loss oscillation: the loss's std over the last half above 2x its std over the first half. Healthy
# runs settle (ratio 0.4-0.7); growing swings mean the updates are not converging.
LOSS_OSC_RATIO = 2.0

# KL blow-up: the smoothed KL to the reference above 0.5 nats/token. Healthy runs stay under 0.12; the
# sign-flipped run reaches 1.5-2.1.
KL_MAX = 0.5

# Validity drop: the valid-format rate falls by more than 5 points start to end (healthy: at most 2).
VALIDITY_DROP = 0.05

# Zero-std groups: more than half of the groups all-correct or all-wrong on average, so most prompts
# give GRPO's group-normalised advantage nothing (healthy runs: about 0.15; the collapsed one 0.8).
ZERO_STD_MAX = 0.5

# Truncation: more than 5% of responses hit the token budget at the end, or the rate rose by 2 points.
# (Truncated responses are invalid in the sandbox, so this is lost signal, not just long answers.)
TRUNC_HIGH = 0.05
TRUNC_RISE = 0.02

# Weak signal: mean |advantage| per token below 0.05 at the end, or below a quarter of its start.
# Normalised estimators sit at 0.6-0.7 and unnormalised ones (Dr. GRPO, RLOO) at 0.2-0.35; the
# collapsed run ends at 0.02.
WEAK_ADV_ABS = 0.05
WEAK_ADV_FRAC = 0.25

# --- comparison tolerances (held-out metrics, in points) ------------------------------------------

# Without a seed CI, an Overall difference within 1.5 points is noise: the reference GRPO's Overall
# has a seed std of about 1.2 points (5 seeds), so the difference of two single-seed runs has a std of
# about 1.7; 1.5 is a lenient one-sigma band, which a CI, when given, replaces.
OVERALL_TOL = 1.5
# Hard-tier pass@1 averages 6,144 samples, so sampling noise is small, but training seeds still spread
# it by about 1.5 points on the reference runs.
HARD_TOL = 1.5
# Held-out mean length: 5% relative. Seeds of one algorithm agree within about 1%.
LENGTH_REL_TOL = 0.05
# End-of-run entropy against the parent's: 15% relative (seeds of one algorithm agree within ~10%).
ENTROPY_REL_TOL = 0.15
# A tier is reported as moved at 3 points: a greedy tier of 64 problems moves in steps of 1.56.
TIER_MOVE = 3.0

# The tag vocabulary. Curve tags come from the detectors, comparison tags from `compare`.
TAGS: dict[str, str] = {
    "nan": "a non-finite value in some curve (or in the held-out Overall)",
    "missing": "no curves and no held-out metrics at all: the run failed before logging",
    "entropy_collapse": "entropy ends below ENTROPY_COLLAPSE_FRAC of its start or below ENTROPY_FLOOR",
    "entropy_blowup": "entropy ends above ENTROPY_BLOWUP_FRAC x its start",
    "reward_plateau": "training accuracy gains less than PLATEAU_GAIN over the last half",
    "reward_decline": "training accuracy ends more than DECLINE_TOL below its start",
    "length_drift_up": "mean response length grows more than LENGTH_DRIFT",
    "length_drift_down": "mean response length shrinks more than LENGTH_DRIFT",
    "instability": "grad_norm or kl spikes, or a loss whose swings grow",
    "kl_blowup": "smoothed KL to the reference above KL_MAX",
    "validity_drop": "valid-format rate falls by more than VALIDITY_DROP",
    "many_zero_std_groups": "mean fraction of zero-std groups above ZERO_STD_MAX",
    "truncation": "responses hitting the token budget: high at the end or rising",
    "weak_signal": "mean |advantage| tiny, or faded to a fraction of its start",
    "overall_up": "held-out Overall above the parent's beyond noise",
    "overall_down": "held-out Overall below the parent's beyond noise",
    "overall_flat": "held-out Overall within noise of the parent's",
    "hard_up": "hard-tier pass@1 above the parent's beyond noise",
    "hard_down": "hard-tier pass@1 below the parent's beyond noise",
    "length_shorter": "held-out mean length shorter than the parent's by more than LENGTH_REL_TOL",
    "length_longer": "held-out mean length longer than the parent's by more than LENGTH_REL_TOL",
    "entropy_higher": "end-of-training entropy above the parent's by more than ENTROPY_REL_TOL",
    "entropy_lower": "end-of-training entropy below the parent's by more than ENTROPY_REL_TOL",
    "per_tier": "the tiers whose score moved TIER_MOVE points or more, largest first",
}


@dataclass(frozen=True)
class Finding:
    """One observation: a tag from the fixed vocabulary, its severity in [0, 1], and the numbers."""

    tag: str
    severity: float
    evidence: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        return cls(tag=str(d["tag"]), severity=float(d["severity"]), evidence=str(d["evidence"]))


Trajectory = list[dict]

# --- curve helpers --------------------------------------------------------------------------------


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def series(traj: Trajectory, key: str) -> list[float]:
    """The finite values of one curve, in step order (NaNs are the `nan` detector's business)."""
    return [float(r[key]) for r in traj if _finite(r.get(key))]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mu = _mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs))


def window(n: int) -> int:
    """Smoothing window for a curve of n points: SMOOTH_FRAC of it, at least 1."""
    return max(1, round(n * SMOOTH_FRAC))


def smooth(xs: list[float], w: int | None = None) -> list[float]:
    """Trailing moving average (shorter at the start, so the output has the input's length)."""
    w = window(len(xs)) if w is None else max(1, w)
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= w:
            acc -= xs[i - w]
        out.append(acc / min(i + 1, w))
    return out


def start_value(xs: list[float]) -> float:
    """Mean of the first smoothing window."""
    return _mean(xs[:window(len(xs))])


def end_value(xs: list[float]) -> float:
    """Mean of the last smoothing window."""
    return _mean(xs[-window(len(xs)):])


def slope(xs: list[float]) -> float:
    """Least-squares slope per step (0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, _mean(xs)
    sxx = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (y - my) for i, y in enumerate(xs)) / sxx


def half_slopes(xs: list[float]) -> tuple[float, float]:
    """(slope over the first half, slope over the last half): has the curve flattened or turned?"""
    h = len(xs) // 2
    return slope(xs[:h]), slope(xs[h:])


def last_half_gain(xs: list[float]) -> float:
    """What the least-squares line over the last half gains from its first to its last point."""
    tail = xs[len(xs) // 2:]
    return slope(tail) * (len(tail) - 1)


def spikes(xs: list[float], k: float = SPIKE_K, floor: float = 0.0) -> list[tuple[int, float]]:
    """(index, ratio) of points above k x the median of the preceding window and above ``floor``."""
    hist = max(SPIKE_MIN_HISTORY, window(len(xs)))
    out = []
    for i in range(SPIKE_MIN_HISTORY, len(xs)):
        med = median(xs[max(0, i - hist):i])
        if xs[i] > floor and xs[i] > k * med:
            out.append((i, xs[i] / med if med > 0 else float("inf")))
    return out


def mean_trajectory(trajs: list[Trajectory]) -> Trajectory:
    """Average seeds step by step, over the keys every seed logs, up to the shortest seed. A NaN in
    any seed stays a NaN in the mean (so a seed's blow-up is not averaged away)."""
    trajs = [t for t in trajs if t]
    if not trajs:
        return []
    if len(trajs) == 1:
        return [dict(r) for r in trajs[0]]
    n = min(len(t) for t in trajs)
    keys = [k for k, v in trajs[0][0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in t[0] for t in trajs)]
    return [{k: sum(float(t[i].get(k, float("nan"))) for t in trajs) / len(trajs) for k in keys}
            for i in range(n)]


def _ramp(x: float, at: float, full: float) -> float:
    """Severity: 0.2 at the threshold ``at``, rising linearly to 1.0 at ``full`` (either direction)."""
    if full == at:
        return 1.0
    t = (x - at) / (full - at)
    return round(min(1.0, max(0.2, 0.2 + 0.8 * t)), 3)


def _f(x: float) -> str:
    return f"{x:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:+.0f}%"


# --- detectors ------------------------------------------------------------------------------------


def detect_nan(traj: Trajectory) -> Finding | None:
    """Any non-finite number in any curve."""
    bad: dict[str, int] = {}
    for i, r in enumerate(traj):
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v) and k not in bad:
                bad[k] = int(r.get("step", i)) if _finite(r.get("step")) else i
    if not bad:
        return None
    where = ", ".join(f"{k} (first at step {s})" for k, s in sorted(bad.items(), key=lambda kv: (kv[1], kv[0])))
    return Finding("nan", 1.0, f"non-finite values in {where}")


def detect_entropy_collapse(traj: Trajectory) -> Finding | None:
    e = series(traj, "entropy")
    if len(e) < MIN_TREND_STEPS:
        return None
    s, t = start_value(e), end_value(e)
    if s <= 0 or t >= s:
        return None
    ratio = t / s
    if ratio >= ENTROPY_COLLAPSE_FRAC and t >= ENTROPY_FLOOR:
        return None
    sev = max(_ramp(ratio, ENTROPY_COLLAPSE_FRAC, 0.0), _ramp(-t, -ENTROPY_FLOOR, 0.0) if t < ENTROPY_FLOOR else 0)
    return Finding("entropy_collapse", sev,
                   f"entropy fell from {_f(s)} to {_f(t)} nats/token ({ratio:.0%} of its start)")


def detect_entropy_blowup(traj: Trajectory) -> Finding | None:
    e = series(traj, "entropy")
    if len(e) < MIN_TREND_STEPS:
        return None
    s, t = start_value(e), end_value(e)
    if s <= 0 or t <= ENTROPY_BLOWUP_FRAC * s:
        return None
    return Finding("entropy_blowup", _ramp(t / s, ENTROPY_BLOWUP_FRAC, 3.0),
                   f"entropy rose from {_f(s)} to {_f(t)} nats/token ({t / s:.2f}x its start)")


def _accuracy(traj: Trajectory) -> list[float]:
    a = series(traj, "accuracy")
    return a if a else series(traj, "reward")


def detect_reward_plateau(traj: Trajectory) -> Finding | None:
    a = _accuracy(traj)
    if len(a) < MIN_TREND_STEPS:
        return None
    s, t = start_value(a), end_value(a)
    gain = last_half_gain(a)
    # A decline is its own finding, and a saturated curve has nowhere to go.
    if gain >= PLATEAU_GAIN or t < s - DECLINE_TOL or t >= SATURATED_ACC:
        return None
    first = slope(a[:len(a) // 2]) * (len(a) // 2 - 1)
    return Finding("reward_plateau", _ramp(gain, PLATEAU_GAIN, -0.05),
                   f"training accuracy gained {gain:+.3f} over the last {len(a) - len(a) // 2} steps "
                   f"(least squares) after {first:+.3f} over the first half; it ends at {t:.2f}")


def detect_reward_decline(traj: Trajectory) -> Finding | None:
    a = _accuracy(traj)
    if len(a) < MIN_TREND_STEPS:
        return None
    s, t = start_value(a), end_value(a)
    if t >= s - DECLINE_TOL:
        return None
    return Finding("reward_decline", _ramp(s - t, DECLINE_TOL, 0.2),
                   f"training accuracy fell from {s:.2f} to {t:.2f} (smoothed)")


def detect_length_drift(traj: Trajectory) -> Finding | None:
    """length_drift_up or length_drift_down: mean response length moved more than LENGTH_DRIFT."""
    L = series(traj, "response_length")
    if len(L) < MIN_TREND_STEPS:
        return None
    s, t = start_value(L), end_value(L)
    if s <= 0:
        return None
    rel = t / s - 1
    if abs(rel) <= LENGTH_DRIFT:
        return None
    tag = "length_drift_up" if rel > 0 else "length_drift_down"
    return Finding(tag, _ramp(abs(rel), LENGTH_DRIFT, 0.5),
                   f"mean response length went from {_f(s)} to {_f(t)} tokens ({_pct(rel)})")


def _spike_text(name: str, sp: list[tuple[int, float]]) -> str:
    shown = ", ".join(f"step {i} ({'>100' if r > 100 else f'{r:.1f}'}x)" for i, r in sp[:3])
    more = f" and {len(sp) - 3} more" if len(sp) > 3 else ""
    return f"{len(sp)} {name} spike{'s' if len(sp) > 1 else ''} over {SPIKE_K:g}x the running median: {shown}{more}"


def detect_instability(traj: Trajectory) -> Finding | None:
    """Spikes in grad_norm or kl, or a loss whose swings grow over the run."""
    parts, sev = [], 0.0
    for key, floor in (("grad_norm", GRAD_SPIKE_FLOOR), ("kl", KL_SPIKE_FLOOR)):
        xs = series(traj, key)
        if len(xs) < MIN_TREND_STEPS:
            continue
        sp = spikes(xs, SPIKE_K, floor)
        if len(sp) >= SPIKE_MIN_COUNT or any(r >= 2 * SPIKE_K for _, r in sp):
            parts.append(_spike_text(key, sp))
            sev = max(sev, min(1.0, 0.2 + 0.2 * len(sp)), _ramp(min(max(r for _, r in sp), 100), SPIKE_K, 4 * SPIKE_K))
    loss = series(traj, "loss")
    if len(loss) >= MIN_TREND_STEPS:
        h = len(loss) // 2
        s1, s2 = _std(loss[:h]), _std(loss[h:])
        ratio = s2 / s1 if s1 > 0 else (float("inf") if s2 > 1e-9 else 0.0)
        if ratio > LOSS_OSC_RATIO:
            shown = ">100" if ratio > 100 else f"{ratio:.1f}"
            parts.append(f"the loss swings {shown}x more in the last half than the first")
            sev = max(sev, _ramp(min(ratio, 100), LOSS_OSC_RATIO, 4 * LOSS_OSC_RATIO))
    if not parts:
        return None
    return Finding("instability", round(sev, 3), "; ".join(parts))


def detect_kl_blowup(traj: Trajectory) -> Finding | None:
    kl = series(traj, "kl")
    if not kl:
        return None
    sm = smooth(kl)
    peak = max(sm)
    if peak <= KL_MAX:
        return None
    return Finding("kl_blowup", _ramp(peak, KL_MAX, 4 * KL_MAX),
                   f"KL to the reference reached {_f(peak)} nats/token (smoothed; ends at {_f(sm[-1])})")


def detect_validity_drop(traj: Trajectory) -> Finding | None:
    v = series(traj, "validity")
    if len(v) < MIN_TREND_STEPS:
        return None
    s, t = start_value(v), end_value(v)
    if s - t <= VALIDITY_DROP:
        return None
    return Finding("validity_drop", _ramp(s - t, VALIDITY_DROP, 0.5),
                   f"valid-format rate fell from {s:.1%} to {t:.1%}")


def detect_zero_std_groups(traj: Trajectory) -> Finding | None:
    z = series(traj, "zero_std_groups")
    if not z:
        return None
    m = _mean(z)
    if m <= ZERO_STD_MAX:
        return None
    return Finding("many_zero_std_groups", _ramp(m, ZERO_STD_MAX, 1.0),
                   f"on average {m:.0%} of groups were all-correct or all-wrong (zero reward std; "
                   f"{end_value(z):.0%} at the end), so they carried no group-relative signal")


def detect_truncation(traj: Trajectory) -> Finding | None:
    tr = series(traj, "truncated")
    if not tr:
        return None
    t = end_value(tr)
    rise = t - start_value(tr) if len(tr) >= MIN_TREND_STEPS else 0.0
    if t <= TRUNC_HIGH and rise <= TRUNC_RISE:
        return None
    return Finding("truncation", max(_ramp(t, TRUNC_HIGH, 0.3), _ramp(rise, TRUNC_RISE, 0.2)),
                   f"{t:.1%} of responses hit the token budget at the end ({rise * 100:+.1f} points over the run)")


def detect_weak_signal(traj: Trajectory) -> Finding | None:
    adv = series(traj, "adv_abs_mean")
    if not adv:
        return None
    t = end_value(adv)
    s = start_value(adv) if len(adv) >= MIN_TREND_STEPS else t
    faded = s > 0 and t < WEAK_ADV_FRAC * s
    if t >= WEAK_ADV_ABS and not faded:
        return None
    sev = max(_ramp(-t, -WEAK_ADV_ABS, 0.0) if t < WEAK_ADV_ABS else 0.0,
              _ramp(t / s, WEAK_ADV_FRAC, 0.0) if faded else 0.0)
    return Finding("weak_signal", sev,
                   f"mean |advantage| per token is {_f(t)} at the end (from {_f(s)} at the start)")


# Run order: the most basic failure first, so the evidence reads from cause-like to symptom-like.
DETECTORS: tuple[Callable[[Trajectory], Finding | None], ...] = (
    detect_nan, detect_kl_blowup, detect_instability, detect_entropy_collapse, detect_entropy_blowup,
    detect_reward_decline, detect_reward_plateau, detect_validity_drop, detect_zero_std_groups,
    detect_weak_signal, detect_truncation, detect_length_drift,
)


def detect_all(traj: Trajectory) -> list[Finding]:
    """Every detector's finding on one (possibly seed-averaged) trajectory, in DETECTORS order."""
    return [f for f in (d(traj) for d in DETECTORS) if f is not None]
