"""Error rates of the confirmation rule, measured: an A/A test and planted effects (issue 27, item 5).

*A/A.* Null candidates are GRPO with a change that should not matter and is not bit-identical: its advantages
multiplied by (1 + e z), z a standard normal drawn per token from the batch and the variant's own number, e 1%,
5% or 10% (zero-mean jitter, far below the noise 8 samples a group already put in an advantage).
*Planted effects.* GRPO with a share q of its rewards replaced by coin flips (label noise): a weaker algorithm
by construction, whose true distance to GRPO grows with q and is measured here on every seed.

Every arm is trained once per seed and scored on both held-out splits (search and confirmation) at that seed,
as `poise discover` would score it there. The analysis then runs what the loop runs, many times over the same
trainings: for every choice of one search seed and n confirmation seeds among the others, the nulls are
ranked on the search split at the search seed (`selection`'s paired score), the best `reeval_top` are
confirmed on the confirmation split at the n fresh seeds against GRPO on the same seeds, with the
package's own rule (`discovery.confirm.confirm`, the sandbox objective). The A/A rate is the share of
replicates that confirm a null; the power is the share of n-seed sets on which the rule finds GRPO better
than a planted arm. Replicates share trainings, so they are not independent: the count of independent
trainings is printed beside each rate.

    python benchmarks/bench_error_rates.py --seeds 8 --workers 2       # trains what is missing, then reports
    python benchmarks/bench_error_rates.py --report                    # the report from the stored results

Results: benchmarks/results/protocol2/error_rates.{json,md}
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).parent
OUT = HERE / "results" / "protocol2"
STORE = OUT / "error_rates.json"

NULLS = {"aa_null1": 0.01, "aa_null2": 0.05, "aa_null3": 0.10}  # name: jitter
PLANTED = {"label_noise25": 0.25, "label_noise35": 0.35, "label_noise50": 0.5}

NULL_SOURCE = '''"""A/A null {k}: GRPO whose advantages are multiplied by (1 + {e} z), z a standard normal per token drawn
from the batch and this variant's number. Zero-mean jitter: it should not matter, and it is not bit-identical
to GRPO."""
import torch

from poise.algorithms.grpo import compute_advantages as grpo_advantages

VARIANT = {k}


def compute_advantages(batch, cfg):
    adv = grpo_advantages(batch, cfg)
    gen = torch.Generator().manual_seed(VARIANT * 1_000_003 + int(batch.lengths.sum()))
    return adv * (1 + {e} * torch.randn(adv.shape, generator=gen))
'''

PLANTED_SOURCE = '''"""Planted effect: GRPO with a share {q} of its rewards replaced by coin flips (probability 0.3),
chosen per response from the batch itself. Label noise weakens the learning signal, so this is worse than GRPO by
construction; by how much is measured."""
import torch

from poise.algorithms.grpo import compute_advantages as grpo_advantages

SHARE = {q}


def shape_rewards(batch, cfg):
    gen = torch.Generator().manual_seed(int(batch.lengths.sum()) * 1_000_003 + int(batch.mask.shape[1]))
    swap = torch.rand(batch.rewards.shape[0], generator=gen) < SHARE
    coin = (torch.rand(batch.rewards.shape[0], generator=gen) < 0.3).float()
    return torch.where(swap, coin, batch.rewards.float())


def compute_advantages(batch, cfg):
    return grpo_advantages(batch, cfg)
'''


def source(name: str) -> str | None:
    if name in NULLS:
        return NULL_SOURCE.format(k=list(NULLS).index(name) + 1, e=NULLS[name])
    if name in PLANTED:
        return PLANTED_SOURCE.format(q=PLANTED[name])
    return None


def run_one(args: tuple[str, int, str]) -> dict:
    name, seed, fidelity = args
    import dataclasses

    import torch

    torch.set_num_threads(1)
    from poise.algorithms import algorithm_from_source, builtin_source
    from poise.backends.tiny import rl_start
    from poise.evaluation.fidelity import get_fidelity
    from poise.sandbox.benchmark import evaluate_policy
    from poise.sandbox.trainer import train_rl

    fid = get_fidelity(fidelity)
    src = source(name)
    algo = algorithm_from_source(src or builtin_source(name), name, f"bench:{name}")
    policy, ref, exclude = rl_start(fid, device="cpu")
    t0 = time.time()
    trajectory = train_rl(algo, policy, ref, fid.rl, seed, exclude)
    t1 = time.time()
    scores = {split: evaluate_policy(policy, dataclasses.replace(fid.eval, split=split), seed)
              for split in ("search", "confirm")}
    return {"name": name, "seed": seed, "metrics": scores, "train_s": t1 - t0, "eval_s": time.time() - t1,
            "trajectory": trajectory}


def train(seeds: int, workers: int, fidelity: str) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    done: dict = json.loads(STORE.read_text()) if STORE.exists() else {}
    names = ["grpo", *NULLS, *PLANTED]
    todo = [(n, s, fidelity) for s in range(seeds) for n in names if f"{n}/{s}" not in done]
    print(f"{len(todo)} trainings to run ({len(done)} stored), {workers} at a time", flush=True)
    t0 = time.time()
    with get_context("spawn").Pool(workers) as pool:
        for i, res in enumerate(pool.imap_unordered(run_one, todo), 1):
            res.pop("trajectory")  # the curves are not what this benchmark reads; the file stays small
            done[f"{res['name']}/{res['seed']}"] = res
            STORE.write_text(json.dumps(done, default=float))  # after each training: a stopped run resumes
            print(f"[{i}/{len(todo)} {time.time() - t0:.0f}s] {res['name']}/{res['seed']}: train {res['train_s']:.0f}s, "
                  f"eval {res['eval_s']:.0f}s", flush=True)
    return done


def judge(arms: dict, cand: str, base: str, fresh: tuple[int, ...], obj):
    """The package's verdict (`confirm.confirm`) on arm `cand` against arm `base`, confirmation split, paired on
    the seeds `fresh`."""
    from poise.discovery.confirm import confirm

    return confirm(0, "x", [arms[cand][s]["confirm"] for s in fresh], [arms[base][s]["confirm"] for s in fresh], obj,
                   list(fresh), list(fresh))


def null_replicates(arms: dict, seeds: list[int], k: int, n: int, top: int, obj, acc: str):
    """A/A after selection, as the loop runs it: every choice of k search seeds ranks the nulls (their mean
    difference from GRPO on those seeds: selection's paired score), and the best `top` are confirmed against GRPO
    on every n of the other seeds. Yields (score, picks, verdicts) per replicate."""
    from poise.evaluation.keys import metric_value

    for search in itertools.combinations(seeds, k):
        score = {m: sum(metric_value(arms[m][s]["search"], acc) - metric_value(arms["grpo"][s]["search"], acc)
                        for s in search) / k for m in NULLS}
        picks = sorted(NULLS, key=lambda m: -score[m])[:top]
        for fresh in itertools.combinations([x for x in seeds if x not in search], n):
            yield score, picks, [judge(arms, m, "grpo", fresh, obj) for m in picks]


def report(done: dict) -> str:
    from poise.discovery.objective import parse_directive
    from poise.evaluation.keys import SANDBOX_RANK_ON, metric_value
    from poise.evaluation.metrics import mean_ci, seed_diff_ci

    acc = SANDBOX_RANK_ON
    obj = parse_directive(None, acc)
    cut = obj.effect(acc)
    arms: dict[str, dict[int, dict]] = {}
    for r in done.values():
        arms.setdefault(r["name"], {})[r["seed"]] = r["metrics"]
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))
    planted = [n for n in PLANTED if n in arms]  # an arm added later may not be trained yet
    g = arms["grpo"]
    from poise.discovery.settings import DiscoverConfig

    top, nf = DiscoverConfig().reeval_top, len(DiscoverConfig().reeval_seeds)  # the shipped rule's picks and seeds
    lines = [f"Seeds {seeds}; accuracy metric {acc}; the rule: a paired 95% interval over {nf} fresh seeds wholly above "
             f"+{cut:g} (`confirm.confirm`, the sandbox objective)", "",
             "**Each arm against GRPO on the same seeds** (paired over all seeds)", "",
             f"| arm | split | {acc} | Δ {acc} vs GRPO | sd of the per-seed Δ | Overall | Δ Overall vs GRPO |",
             "|---|---|---|---|---|---|---|"]
    for n in ["grpo", *NULLS, *planted]:
        for split in ("search", "confirm"):
            a = {s: metric_value(arms[n][s][split], acc) for s in seeds}
            o = {s: arms[n][s][split]["overall"] for s in seeds}
            if n == "grpo":
                lines.append(f"| {n} | {split} | {mean_ci(list(a.values()))} | — | — | {mean_ci(list(o.values()))} | — |")
                continue
            d = seed_diff_ci(a, {s: metric_value(g[s][split], acc) for s in seeds})
            do = seed_diff_ci(o, {s: g[s][split]["overall"] for s in seeds})
            sd = statistics.stdev([a[s] - metric_value(g[s][split], acc) for s in seeds])
            lines.append(f"| {n} | {split} | {mean_ci(list(a.values()))} | {d.mean:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}] | "
                         f"{sd:.2f} | {mean_ci(list(o.values()))} | {do.mean:+.2f} [{do.lo:+.2f}, {do.hi:+.2f}] |")

    lines += ["", "**A/A: null candidates through selection and confirmation**", "",
              f"{len(NULLS)} nulls (advantage jitter {', '.join(f'{e:.0%}' for e in NULLS.values())}) ranked on the "
              f"search split, the best {top} confirmed on {nf} other seeds against GRPO; every choice of search and fresh "
              f"seeds among the {len(seeds)} is one replicate. From {len(NULLS) * len(seeds)} null trainings and "
              f"{len(seeds)} of GRPO.", "",
              "| search seeds | replicates | replicates that confirmed a null | confirmations that passed | highest "
              "lower bound reached | selection luck, mean (max) |", "|---|---|---|---|---|---|"]
    for k in (1, 2):
        reps, false_any, false_each, luck, lows = 0, 0, 0, [], []
        for score, picks, vs in null_replicates(arms, seeds, k, nf, top, obj, acc):
            reps += 1
            hits = [v.verdict == "discovery" for v in vs]
            false_any += any(hits)
            false_each += sum(hits)
            luck += [score[n] - v.d_accuracy["mean"] for n, v in zip(picks, vs)]
            lows += [v.d_accuracy["lo"] for v in vs]
        if reps:
            lines.append(f"| {k} | {reps} | {false_any} | {false_each} of {reps * top} | {max(lows):+.2f} (needs > "
                         f"+{cut:g}) | {sum(luck) / len(luck):+.2f} ({max(luck):+.2f}) |")
    # power: the same rule with GRPO as the candidate and a planted arm as the baseline, on every nf-seed set
    lines += ["", f"**Power: GRPO against a planted weaker arm** (the rule with GRPO as the candidate; every {nf} of "
              f"the {len(seeds)} seeds)", "",
              f"| planted arm | true Δ (GRPO - arm, all {len(seeds)} seeds, confirmation split) | sd of the per-seed Δ | "
              f"sets the rule confirms (> +{cut:g}) | sets whose paired interval excludes 0 |",
              "|---|---|---|---|---|"]
    for n in planted:
        d = seed_diff_ci({s: metric_value(g[s]["confirm"], acc) for s in seeds},
                         {s: metric_value(arms[n][s]["confirm"], acc) for s in seeds})
        sets = list(itertools.combinations(seeds, nf))
        vs = [judge(arms, "grpo", n, f, obj) for f in sets]
        hit = sum(v.verdict == "discovery" for v in vs)
        nonzero = sum(v.d_accuracy["lo"] > 0 for v in vs)
        sd = statistics.stdev([metric_value(g[s]["confirm"], acc) - metric_value(arms[n][s]["confirm"], acc) for s in seeds])
        lines.append(f"| {n} | {d.mean:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}] | {sd:.2f} | {hit} of {len(sets)} | "
                     f"{nonzero} of {len(sets)} |")
    lines += rule_grid(arms, seeds, planted, acc, obj, top)
    ts = [r["train_s"] for r in done.values()]
    es = [r["eval_s"] for r in done.values()]
    lines += ["", f"One training {sum(ts) / len(ts):.0f} s and its two evaluations {sum(es) / len(es):.0f} s on average "
              "(one thread each, two at a time)."]
    md = "\n".join(lines) + "\n"
    (OUT / "error_rates.md").write_text(md)
    return md


FRESH = (3, 4, 5, 6)  # fresh seeds a confirmation could use
CUTS = (0.0, 0.25, 0.5, 1.0)  # minimum effects on the accuracy metric


def rule_grid(arms: dict, seeds: list[int], planted: list[str], acc: str, obj, top: int) -> list[str]:
    """Other confirmation rules on the same trainings: n fresh seeds and a minimum effect c, the paired 95% interval
    wholly above +c. For each: the A/A rate after selection (1 search seed ranks the nulls, the best `top` confirmed
    on every n of the other seeds), the measured power on each planted arm (every n of the seeds), and a model of the
    power at round effects whose per-seed sd grows with the effect as the planted arms measured."""
    import dataclasses

    import numpy as np

    from poise.evaluation.keys import metric_value
    from poise.evaluation.metrics import t_critical

    # how the sd of a per-seed difference grows with the difference: a line through the nulls (at their mean
    # difference) and the planted arms, fitted by least squares on the confirmation split
    pts = []
    for n in [*NULLS, *planted]:
        d = [metric_value(arms["grpo"][s]["confirm"], acc) - metric_value(arms[n][s]["confirm"], acc) for s in seeds]
        pts.append((abs(statistics.fmean(d)), statistics.stdev(d)))
    slope, icept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    rng = np.random.default_rng(0)
    effects = (0.5, 1.0, 1.5, 2.0)

    def modelled(n: int, cut: float, effect: float, draws: int = 40_000) -> float:
        d = rng.normal(effect, icept + slope * effect, size=(draws, n))
        lo = d.mean(1) - t_critical(n - 1) * d.std(1, ddof=1) / np.sqrt(n)
        return float((lo > cut).mean())

    lines = ["", f"**Other rules on the same trainings** (n fresh seeds, minimum effect c: the paired 95% interval of "
             f"Δ {acc} wholly above +c; `confirm.confirm` with that c). A/A: one search seed ranks the {len(NULLS)} nulls "
             f"and the best {top} are confirmed on every n of the other {len(seeds) - 1} seeds. Power, measured: every "
             f"n of the {len(seeds)} seeds, GRPO against each planted arm. Power, modelled: normal per-seed differences "
             f"whose sd grows with the true difference as measured (sd = {icept:.2f} + {slope:.2f} x Δ, fitted on the "
             f"nulls and planted arms). Trainings: what a confirmation of the best {top} and GRPO costs.", "",
             "| fresh seeds | min effect | A/A: replicates confirming a null | highest null lower bound | "
             + " | ".join(f"measured power, {n}" for n in planted) + " | "
             + " | ".join(f"modelled power at +{e:g}" for e in effects) + " | trainings |",
             "|" + "---|" * (5 + len(planted) + len(effects))]
    for n in FRESH:
        if n > len(seeds) - 1:
            continue
        for cut in CUTS:
            o = dataclasses.replace(obj, min_effect=(("overall", cut),))
            reps, false_any, lows = 0, 0, []
            for _, _, vs in null_replicates(arms, seeds, 1, n, top, o, acc):
                reps += 1
                false_any += any(v.verdict == "discovery" for v in vs)
                lows += [v.d_accuracy["lo"] for v in vs]
            sets = list(itertools.combinations(seeds, n))
            power = [sum(judge(arms, "grpo", k, f, o).verdict == "discovery" for f in sets) / len(sets)
                     for k in planted]
            lines.append(f"| {n} | +{cut:g} | {false_any} of {reps} | {max(lows):+.2f} | "
                         + " | ".join(f"{p:.2f}" for p in power) + " | "
                         + " | ".join(f"{modelled(n, cut, e):.2f}" for e in effects) + f" | {(top + 1) * n} |")
    return lines


def main() -> None:
    global OUT, STORE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8, help="training seeds of every arm (the shipped rule's A/A needs "
                                                          "1 search seed + its 5 fresh ones)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--report", action="store_true", help="only the report, from the stored results")
    ap.add_argument("--out", type=Path, default=OUT, help="where error_rates.{json,md} go")
    args = ap.parse_args()
    OUT, STORE = args.out, args.out / "error_rates.json"
    done = json.loads(STORE.read_text()) if args.report else train(args.seeds, args.workers, args.fidelity)
    print(report(done))


if __name__ == "__main__":
    main()
