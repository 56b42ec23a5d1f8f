"""Held-out metrics over seeds, and a candidate's curves and metrics against its parent's: which moved,
by how much, and whether beyond the noise (the seeds' confidence interval when there are several, the
tolerances in `curves.py` otherwise)."""

from __future__ import annotations

import math

from poise.reflect.curves import (
    ENTROPY_REL_TOL,
    HARD_TOL,
    LENGTH_REL_TOL,
    OVERALL_TOL,
    TIER_MOVE,
    Finding,
    Trajectory,
    _f,
    _finite,
    _pct,
    _ramp,
    end_value,
    series,
)


def mean_metrics(ms: list[dict]) -> dict:
    """Average held-out metrics over seeds, keeping the structure (tiers -> numeric fields)."""
    ms = [m for m in ms if m]
    if not ms:
        return {}
    if len(ms) == 1:
        return ms[0]

    def avg(dicts: list[dict]) -> dict:
        out: dict = {}
        for k, v in dicts[0].items():
            if isinstance(v, dict) and all(isinstance(d.get(k), dict) for d in dicts):
                out[k] = avg([d[k] for d in dicts])
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in d for d in dicts):
                out[k] = sum(float(d[k]) for d in dicts) / len(dicts)
            else:
                out[k] = v
        return out

    return avg(ms)


def hard_score(metrics: dict) -> float | None:
    """The benchmark's hard_pass1, or None when the metrics lack the pass@k tiers (a partial run)."""
    from poise.evaluation.keys import hard_pass1
    try:
        v = float(hard_pass1(metrics))
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) else None


def _tol(ci, key: str, default: float) -> float:
    """A half-width from ``ci``: a number, an object with ``half_width`` (metrics.CI), or a mapping of
    those by metric ("overall", "hard"). Missing or undefined (nan, one seed) -> the default."""
    if isinstance(ci, dict):
        ci = ci.get(key)
    h = getattr(ci, "half_width", ci)
    return float(h) if _finite(h) and h >= 0 else default


def _move(tag: str, label: str, c: float, p: float, tol: float, src: str, flat: bool) -> Finding | None:
    d = c - p
    if d > tol:
        return Finding(f"{tag}_up", _ramp(d, tol, 4 * tol if tol > 0 else 10.0),
                       f"{label} {c:.1f} vs parent {p:.1f} (Δ {d:+.1f}, beyond {src} ±{tol:.1f})")
    if d < -tol:
        return Finding(f"{tag}_down", _ramp(-d, tol, 4 * tol if tol > 0 else 10.0),
                       f"{label} {c:.1f} vs parent {p:.1f} (Δ {d:+.1f}, beyond {src} ±{tol:.1f})")
    if flat:
        return Finding(f"{tag}_flat", 0.1, f"{label} {c:.1f} vs parent {p:.1f} (Δ {d:+.1f}, within {src} ±{tol:.1f})")
    return None


def compare(child_traj: Trajectory, child_metrics: dict, parent_traj: Trajectory, parent_metrics: dict,
            ci=None) -> list[Finding]:
    """Findings of the child against its parent: overall_up/down/flat, hard_up/down, length_shorter/
    longer (held-out), entropy_higher/lower (end of training) and per_tier (the tiers that moved most).
    ``ci``: the noise half-width in points (see ``_tol``); without it OVERALL_TOL and HARD_TOL."""
    out: list[Finding] = []
    cm, pm = child_metrics or {}, parent_metrics or {}
    if _finite(cm.get("overall")) and _finite(pm.get("overall")):
        tol = _tol(ci, "overall", float("nan"))
        src = "seed CI" if math.isfinite(tol) else "default noise"
        moved = _move("overall", "Overall", cm["overall"], pm["overall"],
                      tol if math.isfinite(tol) else OVERALL_TOL, src, flat=True)
        assert moved is not None  # with flat=True _move always returns a finding
        out.append(moved)
    hc, hp = hard_score(cm), hard_score(pm)
    if hc is not None and hp is not None:
        tol = _tol(ci, "hard", float("nan"))
        src = "seed CI" if math.isfinite(tol) else "default noise"
        f = _move("hard", "hard-tier pass@1", hc, hp, tol if math.isfinite(tol) else HARD_TOL, src, flat=False)
        if f:
            out.append(f)
    if _finite(cm.get("length")) and _finite(pm.get("length")) and pm["length"] > 0:
        rel = cm["length"] / pm["length"] - 1
        if abs(rel) > LENGTH_REL_TOL:
            tag = "length_longer" if rel > 0 else "length_shorter"
            out.append(Finding(tag, _ramp(abs(rel), LENGTH_REL_TOL, 0.5),
                               f"held-out mean length {cm['length']:.1f} vs parent {pm['length']:.1f} tokens "
                               f"({_pct(rel)})"))
    ec, ep = series(child_traj or [], "entropy"), series(parent_traj or [], "entropy")
    if ec and ep and end_value(ep) > 0:
        rel = end_value(ec) / end_value(ep) - 1
        if abs(rel) > ENTROPY_REL_TOL:
            tag = "entropy_higher" if rel > 0 else "entropy_lower"
            out.append(Finding(tag, _ramp(abs(rel), ENTROPY_REL_TOL, 1.0),
                               f"end-of-training entropy {_f(end_value(ec))} vs parent {_f(end_value(ep))} "
                               f"({_pct(rel)})"))
    ct, pt = cm.get("tiers") or {}, pm.get("tiers") or {}
    moves = sorted(((ct[t]["score"] - pt[t]["score"], t) for t in ct
                    if t in pt and _finite(ct[t].get("score")) and _finite(pt[t].get("score"))),
                   key=lambda dt: (-abs(dt[0]), dt[1]))
    if moves and abs(moves[0][0]) >= TIER_MOVE:
        shown = [f"{t} {d:+.1f}" for d, t in moves if abs(d) >= TIER_MOVE]
        out.append(Finding("per_tier", _ramp(abs(moves[0][0]), TIER_MOVE, 15.0),
                           f"tiers that moved by {TIER_MOVE:g}+ points: {', '.join(shown)}"))
    return out
