"""The sentences of a reflection's diagnosis: the hypotheses it offers, what the curves and the held-out
metrics show, and the one-line summary. Pure functions of what `diagnose` found."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poise.reflect.compare import hard_score
from poise.reflect.curves import Finding, Trajectory, _finite, end_value, series, start_value, window

if TYPE_CHECKING:
    from poise.reflect.diagnose import Comparison, Objective

def hypotheses(tags: dict[str, Finding], acc: str | None, mech: str, obj: Objective) -> list[str]:
    """Causal readings of the pattern, each worded as a hypothesis, most specific first."""
    h = []
    if "nan" in tags:
        h.append("the non-finite values point to an unguarded division or exponent in the new computation, "
                 "most likely on degenerate (all-correct or all-wrong) groups")
    if "reward_decline" in tags and ("kl_blowup" in tags or "entropy_blowup" in tags):
        h.append("the policy moved far from the reference while training accuracy fell, which is what an "
                 "advantage that rewards the wrong responses (a sign or baseline error) would produce")
    elif "reward_decline" in tags:
        h.append("training accuracy fell, so the update direction itself may be wrong for some responses")
    if "instability" in tags or "kl_blowup" in tags:
        h.append("the spikes are consistent with advantages or ratios that are occasionally too large for "
                 "the step size")
    if "entropy_collapse" in tags:
        h.append("the mechanism may concentrate probability on already-likely tokens and end exploration early")
    declined = "reward_decline" in tags
    if declined and ("many_zero_std_groups" in tags or "weak_signal" in tags):
        h.append("the many all-equal groups and the fading advantage look like consequences of the decline "
                 "(an all-wrong group carries no signal) rather than its cause")
    if "many_zero_std_groups" in tags and not declined:
        h.append("most groups had identical rewards, so the update rested on a minority of prompts and any "
                 "effect of the mechanism acted through those few")
    if "weak_signal" in tags and not declined:
        h.append("the advantage signal faded, so later steps barely changed the policy")
    if "validity_drop" in tags:
        h.append("the valid-format rate fell, so part of the signal went to format rather than correctness")
    if "truncation" in tags:
        h.append("responses increasingly hit the token budget, which makes them invalid in this sandbox")
    shorter = "length_shorter" in tags or "length_drift_down" in tags
    if shorter and not declined and any(t in tags for t in ("overall_down", "hard_down")):
        h.append("the compression seems to apply regardless of correctness, trading accuracy for length "
                 "(the pattern of the paper's DCBE failure)")
    if obj.concise and acc == "up" and "length_longer" in tags:
        h.append("part of the accuracy gain may come from longer answers, which the objective penalises")
    if not h and acc == "up":
        tail = ("; the higher end-of-training entropy suggests it also preserved exploration"
                if "entropy_higher" in tags else "")
        h.append(f"the gain coincides with the change ({mech}), consistent with a stronger or cleaner learning "
                 f"signal{tail}")
    if not h and acc == "flat":
        h.append("the change made no measurable difference: it may rarely activate in this regime, or its "
                 "effect may be smaller than seed noise")
    if not h and acc == "down":
        h.append("the change appears to weaken the useful part of the signal relative to the parent")
    if not h and acc is None:
        h.append("the run shows no failure mode; without a parent, nothing here attributes its result to the "
                 "mechanism")
    if not h:
        h.append("no single curve explains the outcome")
    return h[:3]


def curve_sentence(traj: Trajectory, seeds: list[Trajectory]) -> str:
    parts = []
    for key, label, unit, fmt in (("accuracy", "training accuracy", "", "{:.2f}"), ("entropy", "entropy", "", "{:.3g}"),
                                  ("response_length", "mean response length", " tokens", "{:.1f}")):
        xs = series(traj, key)
        if xs:
            s, t = start_value(xs), end_value(xs)
            extra = f" ({t / s:.0%} of its start)" if key == "entropy" and s > 0 else ""
            parts.append(f"{label} went from {fmt.format(s)} to {fmt.format(t)}{unit}{extra}")
    kl = series(traj, "kl")
    if kl:
        parts.append(f"KL to the reference ended at {end_value(kl):.3g}")
    if not parts:
        return "No curves were logged."
    text = f"Over training ({window(len(traj))}-step averages at each end), " + ", ".join(parts) + "."
    ends = [end_value(a) for a in (series(t, "accuracy") for t in seeds) if a]
    if len(ends) >= 2:  # the seed spread, so that the reader can weigh the averages
        text += f" Final training accuracy ranged {min(ends):.2f}-{max(ends):.2f} across seeds."
    return text


def metrics_sentence(m: dict) -> str:
    bits = []
    if _finite(m.get("overall")):
        bits.append(f"Overall {m['overall']:.1f}")
    h = hard_score(m) if m.get("tiers") else None
    if h is not None:
        bits.append(f"hard-tier pass@1 {h:.1f}")
    if _finite(m.get("length")):
        bits.append(f"mean length {m['length']:.1f} tokens")
    if _finite(m.get("validity")):
        bits.append(f"validity {m['validity']:.1f}%")
    return ("Held-out: " + ", ".join(bits) + ".") if bits else "No held-out metrics were given."




def summary_line(verdict: str, failed: list[str], c: Comparison, m: dict) -> str:
    bits = []
    if c.d_overall is not None:
        bits.append(f"Overall {c.d_overall:+.1f} vs {c.parent} (noise ±{c.tol:.1f}, {c.tol_from})")
    elif _finite(m.get("overall")):
        bits.append(f"Overall {m['overall']:.1f}")
    if c.d_hard is not None:
        bits.append(f"hard pass@1 {c.d_hard:+.1f}")
    if c.d_len is not None:
        bits.append(f"length {c.d_len:+.1%}")
    flags = [t for t in (f.split(":")[0] for f in failed) if t not in ("overall_down", "hard_down")]
    bits.append("flags: " + (", ".join(flags[:4]) if flags else "none"))
    return f"{verdict}: " + "; ".join(bits)
