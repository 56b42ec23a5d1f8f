"""The SFT start against the sandbox's targets: headroom, validity, and length by difficulty.

Evaluates the warm start of a fidelity on the held-out suite (the same evaluation every algorithm gets)
and runs the first steps of GRPO to measure how many training groups are all-fail, then prints, per
tier: the score (pass@32 or greedy), pass@1 at temperature 1, validity and why responses are invalid
(past the token budget, no final answer, malformed), the mean length, and the share and accuracy of each
scratchpad style, against the targets of the sandbox (docs/benchmarks.md).

    python benchmarks/bench_start.py --fidelity standard --seeds 3
Results: benchmarks/results/start_<fidelity>.{json,md}
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poise.algorithms import load_algorithm  # noqa: E402
from poise.backends.tiny import sft_policy  # noqa: E402
from poise.evaluation.fidelity import get_fidelity  # noqa: E402
from poise.evaluation.metrics import mean_ci  # noqa: E402
from poise.sandbox.benchmark import evaluate_policy  # noqa: E402
from poise.sandbox.sft import held_out_prompts  # noqa: E402
from poise.sandbox.task import HARD_TIERS, STYLES, TIERS  # noqa: E402
from poise.sandbox.trainer import train_rl  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# what the sandbox is tuned to show at its SFT start (issue 11): (low, high) in %, None = no bound
TARGETS = {"pass@k score": (15, 60), "pass@k pass@1": (None, 5), "greedy score": (30, 80), "validity": (75, 95),
           "all-fail groups": (30, None)}


def _ok(v: float, bounds) -> str:
    lo, hi = bounds
    return "yes" if (lo is None or v >= lo) and (hi is None or v <= hi) else "**no**"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds of the start (its sampling varies)")
    ap.add_argument("--grpo-steps", type=int, default=10, help="first GRPO steps measured for all-fail groups")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fid = get_fidelity(args.fidelity)
    t0 = time.time()
    policy = sft_policy(fid, log=print)
    runs = [evaluate_policy(policy, fid.eval, seed) for seed in range(args.seeds)]
    eval_s = (time.time() - t0) / args.seeds
    rl = type(fid.rl)(**{**fid.rl.__dict__, "steps": args.grpo_steps})
    curves = train_rl(load_algorithm("grpo"), copy.deepcopy(policy), policy, rl, 0,
                      held_out_prompts(fid.eval.heldout_size, fid.eval.heldout_seed))
    all_fail = 100 * sum(r["all_fail_groups"] for r in curves) / len(curves)

    def tier_mean(t: str, key: str) -> float:
        return mean_ci([r["tiers"][t][key] for r in runs]).mean

    def style(t: str, st: str, key: str) -> float:
        vals = [r["tiers"][t]["styles"].get(st, {}).get(key) for r in runs]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    rows = []
    for t in TIERS:
        hard = t.name in HARD_TIERS
        score, p1, val = tier_mean(t.name, "score"), tier_mean(t.name, "pass@1"), tier_mean(t.name, "validity")
        trunc, noans = tier_mean(t.name, "truncated"), tier_mean(t.name, "no_answer")
        rows.append({"tier": t.name, "metric": runs[0]["tiers"][t.name]["metric"], "terms": f"{t.min_terms}-{t.max_terms}",
                     "score": score, "pass@1": p1, "validity": val, "truncated": trunc, "no_answer": noans,
                     "malformed": 100 - val - trunc - noans, "length": tier_mean(t.name, "length"),
                     "styles": {st: {"share": style(t.name, st, "share"), "accuracy": style(t.name, st, "accuracy")}
                                for st in STYLES},
                     "score_ok": _ok(score, TARGETS["pass@k score" if hard else "greedy score"]),
                     "pass1_ok": _ok(p1, TARGETS["pass@k pass@1"]) if hard else ""})
    overall = mean_ci([r["overall"] for r in runs])
    validity = mean_ci([r["validity"] for r in runs]).mean
    out = {"fidelity": fid.name, "seeds": args.seeds, "tiers": rows, "overall": overall.to_dict(), "validity": validity,
           "all_fail_groups": all_fail, "grpo_steps": args.grpo_steps, "eval_s": eval_s, "targets": TARGETS}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"start_{fid.name}.json").write_text(json.dumps(out, indent=2))
    lines = [f"SFT start of `{fid.name}`, {args.seeds} evaluation seeds (mean); targets in brackets.", "",
             "| tier | terms | metric | score | in target | pass@1 | ≤ 5 % | validity | past budget | no answer | "
             "malformed | length | verbose: share / acc | concise: share / acc | direct: share / acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = " | ".join("—" if r["styles"][s]["share"] != r["styles"][s]["share"]  # nan: never sampled
                        else f"{r['styles'][s]['share']:.0f}% / {r['styles'][s]['accuracy']:.1f}" for s in STYLES)
        lines.append(f"| {r['tier']} | {r['terms']} | {r['metric']} | {r['score']:.1f} | {r['score_ok']} | "
                     f"{r['pass@1']:.1f} | {r['pass1_ok']} | {r['validity']:.1f} | {r['truncated']:.1f} | "
                     f"{r['no_answer']:.1f} | {r['malformed']:.1f} | {r['length']:.1f} | {st} |")
    lines += ["", f"Overall {overall}; validity {validity:.1f}% (target 75-95: {_ok(validity, TARGETS['validity'])}); "
              f"all-fail groups in GRPO's first {args.grpo_steps} steps: {all_fail:.1f}% (target ≥ 30: "
              f"{_ok(all_fail, TARGETS['all-fail groups'])}); one evaluation {eval_s:.1f} s"]
    (RESULTS / f"start_{fid.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
