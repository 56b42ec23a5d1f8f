"""The GRPO family's known phenomena, measured on the sandbox from stored evaluations, each with a paired interval.

Reads the per-seed results of `bench_signal.py` (every arm on the same seeds) and reports, for each phenomenon
the literature describes, the quantity that shows it and its 95% interval over the seeds: paired where two arms
are compared (the same seeds, and on protocol 2 the same random numbers), a one-sample t-interval where one arm's
change over training is. Curves are averaged over the first and the last 10 RL steps.

    python benchmarks/bench_phenomena.py benchmarks/results/protocol2/signal_standard.json \
        benchmarks/results/protocol2/phenomena_arms/signal_standard.json

Several files are merged arm by arm (an arm in two files must give the same numbers in both: the sandbox is
deterministic, so a difference means the files come from different sandboxes and stops the report). Writes
`phenomena.md` beside the first input. Phenomena that need arms the file does not hold are listed as not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poise.evaluation.fidelity import get_fidelity  # noqa: E402
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
    ap.add_argument("signal_json", nargs="+")
    args = ap.parse_args()
    path = Path(args.signal_json[0])
    arms: dict[str, dict[int, dict]] = {}
    for f in args.signal_json:
        for key, r in json.loads(Path(f).read_text()).items():
            name, seed = key.rsplit("/", 1)
            old = arms.setdefault(name, {}).get(int(seed))
            if old is not None and old["metrics"]["overall"] != r["metrics"]["overall"]:
                sys.exit(f"{key}: Overall {old['metrics']['overall']} in one file, {r['metrics']['overall']} in {f}: "
                         f"not the same sandbox")
            arms[name][int(seed)] = r if old is None else {**old, **r}  # the later file's keys (e.g. lengths by
            # correctness, which older evaluations lack) win
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

    def lengths(right: bool):
        """Mean held-out length of right (or wrong) answers over the sampled tiers, weighted by their counts."""
        key = "length_correct" if right else "length_wrong"

        def f(r: dict) -> float:
            tot = num = 0.0
            for row in r["metrics"]["tiers"].values():
                if row["metric"] == "greedy":
                    continue
                share = row["pass@1"] / 100 if right else 1 - row["pass@1"] / 100
                w = row["problems"] * row["samples"] * share
                tot, num = tot + w * row[key], num + w
            return tot / num
        return f

    def has(arm: str, key: str) -> bool:
        return arm in arms and all(key in row for r in arms[arm].values() for row in r["metrics"]["tiers"].values()
                                   if row["metric"] != "greedy" and 0 < row["pass@1"] < 100)

    def vs_len(a: str, b: str, right: bool) -> str:
        key = "length_correct" if right else "length_wrong"
        if not (has(a, key) and has(b, key)):
            return "not measured (needs both arms, scored with lengths by correctness)"
        return vs(a, b, lengths(right))

    def amount(arm: str, f) -> str:
        """A mean that has no sign to show (a count, a share), with its interval."""
        if arm not in arms:
            return "not measured (needs the arm)"
        ci = mean_ci(per(arm, f))
        return f"{ci.mean:.3g} [{ci.lo:.3g}, {ci.hi:.3g}]"

    def vs_ratio(a: str, b: str, f) -> str:
        if a not in arms or b not in arms:
            return "not measured (needs both arms)"
        ci = mean_ci([x / y for x, y in zip(per(a, f), per(b, f))])
        return f"{ci.mean:.3g}x [{ci.lo:.3g}, {ci.hi:.3g}]"

    def r_groups(r: dict) -> int:
        return get_fidelity(r["fidelity"]).rl.prompts_per_step

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
        ("length growth of wrong answers under per-sequence normalisation (Dr. GRPO's length bias)",
         "GRPO per sequence (seq-mean-token-mean) - GRPO (token-mean): held-out length of wrong answers, sampled tiers",
         vs_len("seqmean_grpo", "grpo", right=False), "tokens"),
        ("...", "the same for right answers", vs_len("seqmean_grpo", "grpo", right=True), "tokens"),
        ("...", "GRPO per sequence - Dr. GRPO: held-out length of wrong answers, sampled tiers",
         vs_len("seqmean_grpo", "dr_grpo", right=False), "tokens; Dr. GRPO also drops the std division"),
        ("...", "GRPO per sequence - GRPO: training response length, last 10 steps",
         vs("seqmean_grpo", "grpo", curve("response_length")), "tokens"),
        ("...", f"GRPO per sequence - GRPO: held-out {SANDBOX_RANK_ON}",
         vs("seqmean_grpo", "grpo", held(SANDBOX_RANK_ON)), "points"),
        ("skipping zero-variance groups and refilling the batch (DAPO's dynamic sampling)",
         f"GRPO + dynamic sampling - GRPO: held-out {SANDBOX_RANK_ON}", vs("grpo_dynamic", "grpo",
         held(SANDBOX_RANK_ON)), "points; up to 3 extra rounds of fresh prompts a step"),
        ("...", f"DAPO + dynamic sampling - DAPO: held-out {SANDBOX_RANK_ON}", vs("dapo_dynamic", "dapo",
         held(SANDBOX_RANK_ON)), "points: DAPO with all four of its techniques against poise's three"),
        ("...", f"DAPO + dynamic sampling - GRPO: held-out {SANDBOX_RANK_ON}", vs("dapo_dynamic", "grpo",
         held(SANDBOX_RANK_ON)), "points"),
        ("...", "GRPO + dynamic sampling - GRPO: held-out length", vs("grpo_dynamic", "grpo", held("length")),
         "tokens"),
        ("...", "DAPO + dynamic sampling - DAPO: held-out length", vs("dapo_dynamic", "dapo", held("length")),
         "tokens: DAPO's overlong shaping also ranks the lengths of all-wrong groups, which the filter drops"),
        ("...", "GRPO + dynamic sampling - GRPO: entropy, last 10 steps", vs("grpo_dynamic", "grpo",
         curve("entropy")), "nats a token"),
        ("...", "GRPO + dynamic sampling: rollout rounds a step, all steps", amount("grpo_dynamic",
         lambda r: statistics.fmean(x["rollout_rounds"] for x in r["trajectory"])), "1 = a fixed batch's cost"),
        ("...", "GRPO + dynamic sampling / GRPO: sampled tokens, all steps", vs_ratio("grpo_dynamic", "grpo",
         lambda r: sum(x["sampled_tokens"] for x in r["trajectory"])), "what the refill costs in rollouts"),
        ("...", "GRPO + dynamic sampling: share of a full batch trained, all steps", amount("grpo_dynamic",
         lambda r: statistics.fmean(x["trained_groups"] for x in r["trajectory"]) / r_groups(r)),
         "1 = every step found a full batch of groups with a signal"),
        ("a format-only reward control", "format-only - start: held-out validity", vs("format_grpo", "sft_start",
         held("validity")), "points"),
        ("...", f"format-only - start: held-out {SANDBOX_RANK_ON}", vs("format_grpo", "sft_start",
         held(SANDBOX_RANK_ON)), "points: what rewarding the format alone buys"),
        ("...", f"GRPO - format-only: held-out {SANDBOX_RANK_ON}", vs("grpo", "format_grpo",
         held(SANDBOX_RANK_ON)), "points: what rewarding correctness adds"),
    ]
    lines = [f"Seeds {seeds}; arms {', '.join(sorted(arms))}; 95% intervals over seeds (paired for A - B)", "",
             "| phenomenon | quantity | measured | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    md = "\n".join(lines) + "\n"
    (path.parent / "phenomena.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
