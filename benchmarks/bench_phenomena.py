"""The GRPO family's known phenomena, measured on the sandbox from stored evaluations, each with a paired interval.

Reads the per-seed results of `bench_signal.py` (every arm on the same seeds) and reports, for each phenomenon
the literature describes, the quantity that shows it and its 95% interval over the seeds: paired where two arms
are compared (the same seeds, and on protocol 2 the same random numbers), a one-sample t-interval where one arm's
change over training is. Curves are averaged over the first and the last 10 RL steps.

    python benchmarks/bench_phenomena.py benchmarks/results/protocol2/signal_standard.json

Writes `phenomena.md` beside the input. Phenomena that need arms the file does not hold are listed as not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poise.evaluation.keys import SANDBOX_RANK_ON, metric_value  # noqa: E402
from poise.evaluation.metrics import mean_ci, paired_ci  # noqa: E402


def first(traj: list[dict], key: str, n: int = 10) -> float:
    return statistics.fmean(r[key] for r in traj[:n])


def last(traj: list[dict], key: str, n: int = 10) -> float:
    return statistics.fmean(r[key] for r in traj[-n:])


def fmt(ci, unit: str = "") -> str:
    return f"{ci.mean:+.3g}{unit} [{ci.lo:+.3g}, {ci.hi:+.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("signal_json")
    args = ap.parse_args()
    path = Path(args.signal_json)
    done = json.loads(path.read_text())
    arms: dict[str, dict[int, dict]] = {}
    for key, r in done.items():
        name, seed = key.rsplit("/", 1)
        arms.setdefault(name, {})[int(seed)] = r
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))

    def per(arm: str, f) -> list[float]:
        return [f(arms[arm][s]) for s in seeds]

    def vs(a: str, b: str, f) -> str:
        if a not in arms or b not in arms:
            return "not measured (needs both arms)"
        return fmt(paired_ci(per(a, f), per(b, f)))

    def change(arm: str, key: str) -> str:
        return fmt(mean_ci(per(arm, lambda r: last(r["trajectory"], key) - first(r["trajectory"], key))))

    def level(arm: str, f, unit: str = "") -> str:
        return fmt(mean_ci(per(arm, f)), unit)

    held = lambda key: (lambda r: metric_value(r["metrics"], key))  # noqa: E731
    curve = lambda key: (lambda r: last(r["trajectory"], key))  # noqa: E731
    rows = [
        ("entropy falls as RL sharpens the policy (entropy collapse)", "GRPO: entropy, last 10 - first 10 steps",
         change("grpo", "entropy"), "nats a token"),
        ("clip-higher delays entropy collapse (DAPO)", "DAPO - GRPO: entropy, last 10 steps",
         vs("dapo", "grpo", curve("entropy")), "DAPO also shapes overlong answers, so this is not clip-higher alone"),
        ("the importance ratio reaches the clip range", "GRPO: share of clipped tokens, all steps",
         level("grpo", lambda r: statistics.fmean(x["clip_frac"] for x in r["trajectory"])),
         "0 means clipping (and so clip-higher) cannot act at this learning rate"),
        ("zero-variance groups carry no gradient, and their share changes with training",
         "GRPO: share of groups whose rewards are all equal, last 10 - first 10 steps",
         change("grpo", "zero_std_groups"), "share of groups (0-1)"),
        ("all-fail groups (the sparse-reward regime)", "GRPO: share of all-fail groups, last 10 - first 10 steps",
         change("grpo", "all_fail_groups"), "share of groups (0-1)"),
        ("overlong shaping shortens answers (DAPO)", "DAPO - GRPO: held-out length",
         vs("dapo", "grpo", held("length")), "tokens"),
        ("... and what it costs in accuracy", f"DAPO - GRPO: held-out {SANDBOX_RANK_ON}",
         vs("dapo", "grpo", held(SANDBOX_RANK_ON)), "points"),
        ("dropping GRPO's std and per-sequence normalisers changes length (Dr. GRPO)",
         "Dr. GRPO - GRPO: training response length, last 10 steps", vs("dr_grpo", "grpo", curve("response_length")),
         "poise's GRPO aggregates by token mean, not per sequence: the two differ in the std division and in a "
         "constant against a per-batch token count as the loss normaliser"),
        ("a leave-one-out baseline (RLOO) against the group mean", f"RLOO - GRPO: held-out {SANDBOX_RANK_ON}",
         vs("rloo", "grpo", held(SANDBOX_RANK_ON)), "points"),
        ("what the optimiser's noise does without a signal (coin-flip rewards)", f"null - GRPO: held-out {SANDBOX_RANK_ON}",
         vs("null_grpo", "grpo", held(SANDBOX_RANK_ON)), "points"),
        ("length growth of wrong answers under per-sequence normalisation", "needs a per-sequence-mean GRPO arm and "
         "per-answer lengths by correctness", "not measured", ""),
        ("skipping zero-variance groups (DAPO's dynamic sampling)", "needs an arm that resamples them",
         "not measured", "poise's DAPO leaves it out (fixed rollout budget)"),
        ("a format-only reward control", "needs an arm rewarded for validity alone", "not measured", ""),
    ]
    lines = [f"Seeds {seeds}; arms {', '.join(sorted(arms))}; 95% intervals over seeds (paired for A - B)", "",
             "| phenomenon | quantity | measured | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    md = "\n".join(lines) + "\n"
    (path.parent / "phenomena.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
