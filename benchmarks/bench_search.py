"""Search efficiency: lineage selection against greedy and random parent selection, with and without
racing, scored by what a user would take home: the confirmed Overall of the run's pick.

For each strategy, racing setting (``--race``: search seeds a candidate needs before it may lead or be a
parent twice; 1 = off) and search seed, run the real discovery loop (offline proposer, sandboxed
verifier, reflection) with ``--budget`` candidates, no directive. After every training the run has
done (search and racing evaluations alike, in the order they finished), its *pick* is the entry with
the highest mean search Overall over the seeds trained so far. The pick is then scored where it was
not selected: trained on ``--confirm-seeds`` fresh seeds and evaluated on the confirmation held-out
set. The table reports that confirmed Overall against trainings spent, so racing pays for its extra
seeds, and beside it the pick's search score, whose excess over the confirmed one is selection luck.

Evaluations are cached by the candidate's code (its hash), training seed, held-out split and the
sandbox's fingerprint: the same code trained with the same seed gives the same numbers (the sandbox is
deterministic on the CPU), and the offline implementer writes one design's code the same way every
time, so runs that reach the same design share one training, and a retuned sandbox never reuses an old
number. Both the cache and the finished runs are written as they complete, so an interrupted benchmark
resumes where it stopped; the confirmations train only the picks the table reads, the final ones first.

    python benchmarks/bench_search.py --budget 12 --seeds 3 --race 1,3 --workers 2
    python benchmarks/bench_search.py --budget 12 --seeds 3 --race 1,3 --table-only   # the table so far
Results: benchmarks/results/search_efficiency.{json,md}; the cache: benchmarks/results/search_cache.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
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
from poise.discovery.loop import DiscoverConfig, Loop  # noqa: E402
from poise.executors import EvalJob  # noqa: E402
from poise.executors.local import LocalExecutor  # noqa: E402
from poise.evaluation.fidelity import sandbox_fingerprint  # noqa: E402
from poise.evaluation.metrics import mean_ci  # noqa: E402

RESULTS = Path(__file__).parent / "results"
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
                         workers=args.workers, reeval_top=0, reeval_seeds=(), race_seeds=race)
    t0 = time.time()
    Loop(root, cfg, executor=CachedExecutor(args.workers, args.fidelity)).run()
    a = Archive(root / "archive.db", readonly=True)
    entries = {e.id: e for e in a.entries()}
    evs = sorted((v for e in entries.values() for v in a.evaluations(e.id, trajectories=False)
                  if v.purpose in ("search", "baseline")), key=lambda v: v.id)
    a.close()
    shutil.rmtree(root, ignore_errors=True)
    seen: dict[int, list[float]] = {}
    picks, codes = [], {}
    for v in evs:  # replay: after each training, the entry with the best mean search Overall so far
        seen.setdefault(v.entry_id, []).append(v.metrics["overall"])
        best = max(seen, key=lambda i: (sum(seen[i]) / len(seen[i]), -i))
        e = entries[best]
        d = code_key(e.code)
        codes[d] = e.code
        picks.append({"entry": best, "name": e.name, "design": d, "search": sum(seen[best]) / len(seen[best]),
                      "seeds": len(seen[best])})  # "design": the hash of its code (the cache's key)
    trained = sum(1 for e in entries.values() if e.id != 0 and e.status in ("evaluated", "failed"))
    return {"strategy": strategy, "race": race, "seed": seed, "budget": args.budget, "candidates": trained,
            "trainings": len(evs), "picks": picks, "codes": codes, "wall_s": time.time() - t0}


def pick_at(run: dict, trainings: int) -> str:
    """The design a run would have handed over after that many trainings (its last pick if it spent fewer)."""
    return run["picks"][min(trainings, len(run["picks"])) - 1]["design"]


def confirm_all(runs: list[dict], args) -> dict[str, float]:
    """Confirmed Overall (mean over fresh seeds, confirmation set) of every pick the table reads; with
    ``--table-only``, of those whose confirmation seeds are all cached."""
    codes = {d: c for r in runs for d, c in r["codes"].items()}
    # the final picks first: a stopped benchmark has filled the last column
    wanted = [r["picks"][-1]["design"] for r in runs]
    wanted += [pick_at(r, c) for c in reversed(checkpoints(args)) for r in runs]
    todo = [(d, s) for d in dict.fromkeys(wanted) for s in CONFIRM_SEEDS[:args.confirm_seeds]
            if cache_key(d, s, args.fidelity, "confirm") not in CachedExecutor.cache]

    def one(job):
        d, s = job
        spec = AlgorithmSpec("pick", codes[d] or builtin_source("grpo"), f"code: {d}")
        res = run_evaluation(spec, args.fidelity, s, threads=max(1, 2 // args.workers), split="confirm")
        if isinstance(res, EvalFailure):
            print(f"confirmation of {d} seed {s} failed: {res.message}", file=sys.stderr)
            return
        _store(cache_key(d, s, args.fidelity, "confirm"), res)
        print(f"confirmed {d[:60]} seed {s}: {res.metrics['overall']:.1f}", flush=True)

    if not args.table_only:
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(one, todo))
    out = {}
    for d in codes:
        vals = [CachedExecutor.cache[k]["metrics"]["overall"] for s in CONFIRM_SEEDS[:args.confirm_seeds]
                if (k := cache_key(d, s, args.fidelity, "confirm")) in CachedExecutor.cache]
        if len(vals) == args.confirm_seeds:  # a partial mean would not be the number the table promises
            out[d] = sum(vals) / len(vals)
    return out


def checkpoints(args) -> list[int]:
    """The trainings spent after which the table reads each run's pick."""
    return sorted({min(c, args.budget * args.max_race) for c in (2, 4, 8, 12, 16, 24, 32)})


def table(runs: list[dict], confirmed: dict[str, float], args) -> str:
    cps = checkpoints(args)
    lines = ["| strategy | racing | seeds | trainings | " + " | ".join(f"after {c}" for c in cps)
             + " | at the end | pick's search score | selection luck |",
             "|---|---|---|---|" + "---|" * len(cps) + "---|---|---|"]
    for strategy in args.strategies.split(","):
        for race in args.race:
            rs = [r for r in runs if r["strategy"] == strategy and r["race"] == race and r["budget"] == args.budget]
            if not rs:
                continue
            cells = []
            for c in cps:
                vals = [confirmed.get(pick_at(r, c)) for r in rs]
                cells.append(str(mean_ci(vals)) if None not in vals else "?")
            end = [confirmed.get(r["picks"][-1]["design"]) for r in rs]
            search = [r["picks"][-1]["search"] for r in rs]
            luck = str(mean_ci([s - e for s, e in zip(search, end)])) if None not in end else "?"
            lines.append(f"| {strategy} | {'off' if race == 1 else f'{race} seeds'} | {len(rs)} | "
                         f"{mean_ci([r['trainings'] for r in rs]).mean:.1f} | " + " | ".join(cells)
                         + f" | {str(mean_ci(end)) if None not in end else '?'} | {mean_ci(search)} | {luck} |")
    lines += ["", "Picks at the end (confirmed Overall):"]
    for r in runs:
        p = r["picks"][-1]
        c = confirmed.get(p["design"])
        lines.append(f"- {r['strategy']}, racing {r['race']}, seed {r['seed']}: #{p['entry']} {p['name']} "
                     f"(search {p['search']:.1f} over {p['seeds']} seed(s); confirmed "
                     f"{'?' if c is None else f'{c:.1f}'})")
    return "\n".join(lines) + "\n"


def main() -> None:
    global RESULTS, CACHE
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--race", default="1,3", help="racing settings to compare (1 = off)")
    ap.add_argument("--confirm-seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--strategies", default="lineage,greedy,random")
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
    RESULTS.mkdir(exist_ok=True)
    CachedExecutor.cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for db in args.seed_from:
        added, checked = seed_cache(Path(db), args.fidelity)
        print(f"{db}: {added} evaluations added to the cache, {checked} already there and identical", flush=True)
    out_json = RESULTS / "search_efficiency.json"
    runs = [r for r in (json.loads(out_json.read_text()) if out_json.exists() else []) if "picks" in r]
    done = {(r["strategy"], r["race"], r["seed"], r["budget"]) for r in runs}
    for seed in range(0 if args.table_only else args.seeds):
        for race in args.race:
            for strategy in args.strategies.split(","):
                if (strategy, race, seed, args.budget) in done:
                    continue
                r = run_one(strategy, race, seed, args)
                print(json.dumps({k: v for k, v in r.items() if k not in ("codes", "picks")}), flush=True)
                runs.append(r)
                out_json.write_text(json.dumps(runs, indent=1))
    confirmed = confirm_all([r for r in runs if r["budget"] == args.budget], args)
    text = table(runs, confirmed, args)
    (RESULTS / "search_efficiency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
