"""Search efficiency: lineage selection against greedy and random parent selection, with and without
racing, scored by what a user would take home: the confirmed accuracy of the run's pick against GRPO.

For each strategy, racing setting (``--race``: search seeds a candidate needs before it may lead or be a
parent twice; 1 = off) and search seed, run the real discovery loop (offline proposer, sandboxed
verifier, reflection) with ``--budget`` candidates, no directive, ranking on ``--rank-on`` (the accuracy
metric `poise discover` ranks on: overall@2 on the sandbox). After every training the run has done (search,
baseline and racing evaluations alike, in the order they finished), its *pick* is the entry with the highest
search mean of that metric over the seeds trained so far, taken seed by seed through GRPO's on the same seeds
where the run is paired (as the loop's selection does: `confirm.paired_seed_metrics`). The pick is then
scored where it was not selected: trained on ``--confirm-seeds`` fresh seeds and evaluated on the
confirmation held-out set, beside GRPO on the same fresh seeds. The table reports the pick's confirmed
difference from GRPO (paired over the fresh seeds) against trainings spent, so racing pays for its extra
seeds, beside the pick's search difference, whose excess over the confirmed one is selection luck, and the
verdict of the loop's own rule (`confirm.confirm`) on each final pick.

Evaluations are cached by the candidate's code (its hash), training seed, held-out split and the
sandbox's fingerprint: the same code trained with the same seed gives the same numbers (the sandbox is
deterministic on the CPU), and the offline implementer writes one design's code the same way every
time, so runs that reach the same design share one training, and a retuned sandbox (or another
evaluation protocol) never reuses an old number. Both the cache and the finished runs are written as they
complete, so an interrupted benchmark resumes where it stopped; the confirmations train only the picks the
table reads, the final ones first.

    python benchmarks/bench_search.py --budget 12 --seeds 3 --race 1,3 --workers 2
    python benchmarks/bench_search.py --budget 12 --seeds 3 --race 1,3 --table-only   # the table so far
Results: benchmarks/results/protocol2/search_efficiency.{json,md}; the cache: search_cache.json beside them
(``--out`` moves both; protocol 1's, which ranked on the paper's Overall unpaired, are in benchmarks/results/)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poise.algorithms import builtin_source  # noqa: E402
from poise.backends.tiny import EvalResult  # noqa: E402
from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation  # noqa: E402
from poise.discovery.archive import Archive, code_hash  # noqa: E402
from poise.discovery.confirm import confirm, flat_metrics, paired_seed_metrics, seed_means  # noqa: E402
from poise.discovery.loop import DiscoverConfig, Loop  # noqa: E402
from poise.discovery.objective import MIN_EFFECT, parse_directive  # noqa: E402
from poise.evaluation.fidelity import PROTOCOL, sandbox_fingerprint  # noqa: E402
from poise.evaluation.keys import ACCURACY_KEYS, SANDBOX_RANK_ON, metric_value  # noqa: E402
from poise.evaluation.metrics import mean_ci  # noqa: E402
from poise.executors import EvalJob  # noqa: E402
from poise.executors.local import LocalExecutor  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "protocol2"  # protocol 1's runs: benchmarks/results/
CACHE = RESULTS / "search_cache.json"  # --out moves both
CONFIRM_SEEDS = (1001, 1002, 1003, 1004, 1005)
_lock = threading.Lock()


def code_key(code: str | None) -> str:
    return code_hash(code or builtin_source("grpo"))


def cache_key(code: str, seed: int, fidelity: str, split: str) -> str:
    return f"{sandbox_fingerprint(fidelity)}/{fidelity}/{split}/{seed}/{code}"


def _store(key: str, res: EvalResult) -> None:
    with _lock:
        CachedExecutor.cache[key] = res.to_dict()
        tmp = CACHE.with_suffix(".tmp")
        tmp.write_text(json.dumps(CachedExecutor.cache))
        tmp.replace(CACHE)


class CachedExecutor(LocalExecutor):
    """The local executor with a shared evaluation cache in front of the sandboxed workers."""

    cache: dict = {}

    def __init__(self, workers: int, fidelity: str):
        super().__init__(workers)
        self.fidelity = fidelity

    def submit(self, job: EvalJob, on_step=None) -> cf.Future:
        k = cache_key(code_key(job.spec.source), job.seed, self.fidelity, job.split)
        hit = self.cache.get(k)
        if hit is not None:
            done: cf.Future = cf.Future()
            done.set_result(EvalResult(**hit))
            return done
        fut = super().submit(job, on_step)
        fut.add_done_callback(lambda f: _store(k, f.result()) if isinstance(f.result(), EvalResult) else None)
        return fut


def seed_cache(db: Path, fidelity: str) -> tuple[int, int]:
    """Add a discovery archive's evaluations to the cache: the same code, training seed, split and sandbox
    fingerprint give the same numbers, so a finished `poise discover` run's trainings need not be repeated.
    An evaluation already cached must agree with the archive's to the last digit, else this stops: the
    sandbox is not deterministic and no cached number may be trusted. Returns (added, checked)."""
    a = Archive(db, readonly=True)
    fp = a.get_meta("sandbox")
    if fp != sandbox_fingerprint(fidelity):
        a.close()
        sys.exit(f"{db} was trained on another sandbox (fingerprint {fp}, this one {sandbox_fingerprint(fidelity)}); "
                 f"its numbers cannot stand in for this sandbox's")
    added = checked = 0
    for e in a.entries():
        for v in a.evaluations(e.id, trajectories=True):
            split = "confirm" if v.purpose == "reeval" else "search"
            if v.fidelity != (fidelity if split == "search" else fidelity + "/confirm"):
                continue
            k = cache_key(code_key(e.code), v.seed, fidelity, split)
            res = EvalResult(e.name, v.seed, fidelity, v.trajectory, v.metrics, v.wall_s, {"from": db.name})
            if k in CachedExecutor.cache:
                if CachedExecutor.cache[k]["metrics"] != v.metrics:
                    sys.exit(f"#{e.id} {e.name} seed {v.seed}: {db} and the cache disagree "
                             f"({v.metrics['overall']} vs {CachedExecutor.cache[k]['metrics']['overall']})")
                checked += 1
                continue
            _store(k, res)
            added += 1
    a.close()
    return added, checked


def run_one(strategy: str, race: int, seed: int, args) -> dict:
    """One discovery run; returns its pick after each training, with the pick's search score and code."""
    root = Path(tempfile.mkdtemp(prefix=f"search-{strategy}-r{race}-{seed}-"))
    cfg = DiscoverConfig(budget=args.budget, fidelity=args.fidelity, strategy=strategy, search_seed=seed,
                         workers=args.workers, reeval_top=0, reeval_seeds=(), race_seeds=race, rank_on=args.rank_on)
    t0 = time.time()
    Loop(root, cfg, executor=CachedExecutor(args.workers, args.fidelity)).run()
    a = Archive(root / "archive.db", readonly=True)
    entries = {e.id: e for e in a.entries()}
    evs = sorted((v for e in entries.values() for v in a.evaluations(e.id, trajectories=False)
                  if v.purpose in ("search", "baseline")), key=lambda v: v.id)
    a.close()
    shutil.rmtree(root, ignore_errors=True)
    seen: dict[int, dict[int, dict]] = {}  # entry: {seed: objective metrics}
    picks, codes = [], {}
    for v in evs:  # replay: after each training, the entry with the best search mean so far
        seen.setdefault(v.entry_id, {})[v.seed] = flat_metrics(v.metrics)
        base = seen.get(0, {})
        score = {i: search_score(m, base, cfg.paired, args.rank_on) for i, m in seen.items()}
        best = max(score, key=lambda i: (score[i], -i))
        e = entries[best]
        d = code_key(e.code)
        codes[d] = e.code
        picks.append({"entry": best, "name": e.name, "design": d, "search": score[best], "seeds": len(seen[best]),
                      # the search difference from GRPO, on the seeds both have (None before GRPO has one)
                      "search_d": search_diff(seen[best], base, args.rank_on) if best != 0 else 0.0})
    trained = sum(1 for e in entries.values() if e.id != 0 and e.status in ("evaluated", "failed"))
    return {"strategy": strategy, "race": race, "seed": seed, "budget": args.budget, "candidates": trained,
            "rank_on": args.rank_on, "protocol": cfg.protocol, "trainings": len(evs), "picks": picks, "codes": codes,
            "wall_s": time.time() - t0}


def search_score(per_seed: dict[int, dict], base: dict[int, dict], paired: bool, key: str) -> float:
    """What selection ranks an entry by: its mean of ``key`` over its search seeds, through the baseline's on the
    same seeds when the run is paired (`confirm.paired_seed_metrics`)."""
    return seed_means(paired_seed_metrics(per_seed, base) if paired else per_seed)[key]


def search_diff(per_seed: dict[int, dict], base: dict[int, dict], key: str) -> float | None:
    """The entry's mean difference from GRPO on the search seeds both have; None when they share none."""
    common = sorted(set(per_seed) & set(base))
    return sum(per_seed[s][key] - base[s][key] for s in common) / len(common) if common else None


def pick_at(run: dict, trainings: int) -> str:
    """The design a run would have handed over after that many trainings (its last pick if it spent fewer)."""
    return run["picks"][min(trainings, len(run["picks"])) - 1]["design"]


def confirm_all(runs: list[dict], args) -> dict[str, list[dict]]:
    """The confirmation results (fresh seeds, confirmation set) of GRPO and of every pick the table reads, by
    design; with ``--table-only``, of those whose confirmation seeds are all cached."""
    codes = {d: c for r in runs for d, c in r["codes"].items()}
    grpo = code_key(None)
    codes.setdefault(grpo, None)
    # GRPO and the final picks first: a stopped benchmark has filled the last column
    wanted = [grpo] + [r["picks"][-1]["design"] for r in runs]
    wanted += [pick_at(r, c) for c in reversed(checkpoints(args)) for r in runs]
    seeds = CONFIRM_SEEDS[:args.confirm_seeds]
    todo = [(d, s) for d in dict.fromkeys(wanted) for s in seeds
            if cache_key(d, s, args.fidelity, "confirm") not in CachedExecutor.cache]

    def one(job):
        d, s = job
        spec = AlgorithmSpec("pick", codes[d] or builtin_source("grpo"), f"code: {d}")
        res = run_evaluation(spec, args.fidelity, s, threads=max(1, 2 // args.workers), split="confirm")
        if isinstance(res, EvalFailure):
            print(f"confirmation of {d} seed {s} failed: {res.message}", file=sys.stderr)
            return
        _store(cache_key(d, s, args.fidelity, "confirm"), res)
        print(f"confirmed {d[:60]} seed {s}: {args.rank_on} {metric_value(res.metrics, args.rank_on):.2f}", flush=True)

    if not args.table_only:
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(one, todo))
    out = {}
    for d in codes:
        ms = [CachedExecutor.cache[k]["metrics"] for s in seeds
              if (k := cache_key(d, s, args.fidelity, "confirm")) in CachedExecutor.cache]
        if len(ms) == len(seeds):  # a partial mean would not be the number the table promises
            out[d] = ms
    return out


def confirmed_diff(design: str, confirmed: dict[str, list[dict]], args) -> float | None:
    """The design's mean difference from GRPO over the fresh seeds (paired: the same seeds); None if either
    is not confirmed yet."""
    grpo = confirmed.get(code_key(None))
    ms = confirmed.get(design)
    if grpo is None or ms is None:
        return None
    return sum(metric_value(m, args.rank_on) - metric_value(b, args.rank_on) for m, b in zip(ms, grpo)) / len(ms)


def checkpoints(args) -> list[int]:
    """The trainings spent after which the table reads each run's pick."""
    return sorted({min(c, args.budget * args.max_race) for c in (2, 4, 8, 12, 16, 24, 32)})


def table(runs: list[dict], confirmed: dict[str, list[dict]], args) -> str:
    cps = checkpoints(args)
    key, seeds = args.rank_on, list(CONFIRM_SEEDS[:args.confirm_seeds])
    obj = dataclasses.replace(parse_directive(None, key), min_effect=(("overall", args.min_effect),))
    grpo = confirmed.get(code_key(None))
    lines = [f"Each cell: the pick's confirmed Δ {key} against GRPO (mean over the {len(seeds)} fresh seeds "
             f"{seeds[0]}-{seeds[-1]}, paired, on the confirmation set), mean ± 95% CI over the runs' search seeds.",
             "", "| strategy | racing | seeds | trainings | " + " | ".join(f"after {c}" for c in cps)
             + " | at the end | pick's search Δ | selection luck | discoveries |",
             "|---|---|---|---|" + "---|" * len(cps) + "---|---|---|---|"]
    for strategy in args.strategies.split(","):
        for race in args.race:
            rs = [r for r in runs if r["strategy"] == strategy and r["race"] == race and r["budget"] == args.budget]
            if not rs:
                continue
            cells = []
            for c in cps:
                vals = [confirmed_diff(pick_at(r, c), confirmed, args) for r in rs]
                cells.append(str(mean_ci(vals)) if None not in vals else "?")
            end = [confirmed_diff(r["picks"][-1]["design"], confirmed, args) for r in rs]
            search = [r["picks"][-1]["search_d"] for r in rs]
            luck = (str(mean_ci([s - e for s, e in zip(search, end)]))
                    if None not in end and None not in search else "?")
            found = "?"
            if grpo is not None and all(r["picks"][-1]["design"] in confirmed for r in rs):
                found = str(sum(confirm(0, "pick", confirmed[r["picks"][-1]["design"]], grpo, obj, seeds,
                                        seeds).verdict == "discovery" for r in rs if r["picks"][-1]["entry"] != 0))
            lines.append(f"| {strategy} | {'off' if race == 1 else f'{race} seeds'} | {len(rs)} | "
                         f"{mean_ci([r['trainings'] for r in rs]).mean:.1f} | " + " | ".join(cells)
                         + f" | {str(mean_ci(end)) if None not in end else '?'} | "
                         f"{str(mean_ci(search)) if None not in search else '?'} | {luck} | {found} of {len(rs)} |")
    if grpo is not None:
        lines += ["", f"GRPO confirmed: {key} {mean_ci([metric_value(m, key) for m in grpo])}, the paper's Overall "
                  f"{mean_ci([m['overall'] for m in grpo])} (seeds {seeds})."]
    lines += ["", f"Picks at the end (Δ {key} against GRPO; confirmed: the fresh seeds, the confirmation set):"]
    for r in runs:
        p = r["picks"][-1]
        c = confirmed_diff(p["design"], confirmed, args)
        sd = "?" if p.get("search_d") is None else f"{p['search_d']:+.2f}"
        lines.append(f"- {r['strategy']}, racing {r['race']}, seed {r['seed']}: #{p['entry']} {p['name']} "
                     f"(search {sd} over {p['seeds']} seed(s); confirmed {'?' if c is None else f'{c:+.2f}'})")
    return "\n".join(lines) + "\n"


def main() -> None:
    global RESULTS, CACHE
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--race", default="1,3", help="racing settings to compare (1 = off)")
    ap.add_argument("--confirm-seeds", type=int, default=len(DiscoverConfig().reeval_seeds),
                    help="fresh seeds of the confirmation (default: poise discover's)")
    ap.add_argument("--min-effect", type=float, default=MIN_EFFECT["overall"],
                    help="the minimum effect of the discoveries column (default: poise discover's; protocol 1's "
                         "table was judged at --min-effect 1 --confirm-seeds 3, the rule of that time)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--strategies", default="lineage,greedy,random")
    ap.add_argument("--rank-on", default=SANDBOX_RANK_ON, choices=ACCURACY_KEYS,
                    help="the accuracy metric the runs rank on and the table reads (poise discover's --rank-on)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the results and the cache")
    ap.add_argument("--table-only", action="store_true",
                    help="train nothing: the table from the finished runs and the cached confirmations (? where none)")
    ap.add_argument("--seed-from", action="append", default=[], metavar="ARCHIVE",
                    help="a discovery run's archive.db whose evaluations fill the cache (checked where they overlap)")
    args = ap.parse_args()
    RESULTS = Path(args.out)
    CACHE = RESULTS / "search_cache.json"
    args.race = [int(x) for x in args.race.split(",")]
    args.max_race = max(args.race)
    RESULTS.mkdir(parents=True, exist_ok=True)
    CachedExecutor.cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for db in args.seed_from:
        added, checked = seed_cache(Path(db), args.fidelity)
        print(f"{db}: {added} evaluations added to the cache, {checked} already there and identical", flush=True)
    out_json = RESULTS / "search_efficiency.json"
    # runs of another protocol or metric (and the files before either was recorded) are not this table's
    stored = json.loads(out_json.read_text()) if out_json.exists() else []
    runs = [r for r in stored if "picks" in r and r.get("protocol") == PROTOCOL and r.get("rank_on") == args.rank_on]
    done = {(r["strategy"], r["race"], r["seed"], r["budget"]) for r in runs}
    for seed in range(0 if args.table_only else args.seeds):
        for race in args.race:
            for strategy in args.strategies.split(","):
                if (strategy, race, seed, args.budget) in done:
                    continue
                r = run_one(strategy, race, seed, args)
                print(json.dumps({k: v for k, v in r.items() if k not in ("codes", "picks")}), flush=True)
                runs.append(r)
                stored.append(r)  # the file keeps the runs of other protocols and metrics too
                out_json.write_text(json.dumps(stored, indent=1))
    confirmed = confirm_all([r for r in runs if r["budget"] == args.budget], args)
    text = table(runs, confirmed, args)
    (RESULTS / "search_efficiency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
