"""Search efficiency: lineage selection against greedy and random parent selection at the same budget.

For each strategy and search seed, run the real discovery loop (offline proposer, sandboxed verifier,
reflection) with ``--budget`` candidates and record, after each candidate, the best held-out Overall
found so far (search held-out set, training seed 0). Every run starts from the same GRPO baseline.

Evaluations are cached by *design* (the offline proposer's mechanism description, which fixes the
code's behaviour) and training seed: the same design trained with the same seed gives the same numbers
(the sandbox is deterministic on the CPU), so runs that reach the same design share one training run.
That makes the comparison affordable on 2 cores and changes nothing about what each strategy finds.

    python benchmarks/bench_search.py --budget 4 --seeds 3 --workers 2
Results: benchmarks/results/search_efficiency.{json,md}; the cache: benchmarks/results/search_cache.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poise.agents import offline  # noqa: E402
from poise.backends.tiny import EvalResult  # noqa: E402
from poise.discovery.archive import Archive  # noqa: E402
from poise.discovery.loop import DiscoverConfig, Loop  # noqa: E402
from poise.evaluation.metrics import mean_ci  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CACHE = RESULTS / "search_cache.json"


def _key(entry, seed: int, fidelity: str) -> str:
    d = offline.design_of(entry.proposal) or offline.GRPO
    return f"{fidelity}/{seed}/{d.key()}"


class CachedLoop(Loop):
    """The discovery loop with a shared evaluation cache in front of the sandboxed workers."""

    cache: dict = {}

    def _evaluate(self, e, seed, purpose):
        k = _key(e, seed, self.cfg.fidelity)
        hit = self.cache.get(k)
        if hit is not None:
            return e, seed, purpose, EvalResult(**hit)
        e, seed, purpose, res = super()._evaluate(e, seed, purpose)
        if isinstance(res, EvalResult):
            self.cache[k] = res.to_dict()
            tmp = CACHE.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.cache))
            tmp.replace(CACHE)
        return e, seed, purpose, res


def run_one(strategy: str, seed: int, args) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"search-{strategy}-{seed}-"))
    cfg = DiscoverConfig(budget=args.budget, fidelity=args.fidelity, strategy=strategy, search_seed=seed,
                         workers=args.workers, reeval_top=0, reeval_seeds=())
    t0 = time.time()
    CachedLoop(root, cfg).run()
    a = Archive(root / "archive.db", readonly=True)
    base = a.evaluations(0)[0].metrics["overall"]
    trained = [e for e in a.entries() if e.id != 0 and e.status in ("evaluated", "failed")]
    trained.sort(key=lambda e: e.id)
    best, curve, names = base, [], []
    for e in trained:
        ev = a.evaluations(e.id, "search")
        if ev:
            best = max(best, ev[0].metrics["overall"])
        curve.append(best)
        names.append(f"{e.name}:{ev[0].metrics['overall']:.1f}" if ev else f"{e.name}:failed")
    a.close()
    shutil.rmtree(root, ignore_errors=True)
    return {"strategy": strategy, "seed": seed, "baseline": base, "curve": curve, "candidates": names,
            "wall_s": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fidelity", default="standard")
    ap.add_argument("--strategies", default="lineage,greedy,random")
    ap.add_argument("--reuse", nargs="*", default=[], help="archives of earlier runs whose search evaluations "
                                                            "(same fidelity, seed 0) fill the cache")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    CachedLoop.cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for path in args.reuse:
        a = Archive(Path(path), readonly=True)
        for e in a.entries():
            for v in a.evaluations(e.id):
                if v.purpose in ("search", "baseline") and v.fidelity == args.fidelity:
                    CachedLoop.cache.setdefault(_key(e, v.seed, args.fidelity), EvalResult(
                        e.name, v.seed, args.fidelity, v.trajectory, v.metrics, v.wall_s, {}).to_dict())
        a.close()
    out_json = RESULTS / "search_efficiency.json"
    runs = json.loads(out_json.read_text()) if out_json.exists() else []
    done = {(r["strategy"], r["seed"], len(r["curve"])) for r in runs}
    for seed in range(args.seeds):
        for strategy in args.strategies.split(","):
            if (strategy, seed, args.budget) in done:
                continue
            r = run_one(strategy, seed, args)
            print(json.dumps(r), flush=True)
            runs.append(r)
            out_json.write_text(json.dumps(runs, indent=1))
    lines = [f"| strategy | seeds | " + " | ".join(f"best after {i + 1}" for i in range(args.budget)) + " |",
             "|---|---|" + "---|" * args.budget]
    for strategy in args.strategies.split(","):
        rs = [r for r in runs if r["strategy"] == strategy and len(r["curve"]) == args.budget]
        if not rs:
            continue
        cells = []
        for i in range(args.budget):
            ci = mean_ci([r["curve"][i] for r in rs])
            cells.append(str(ci))
        lines.append(f"| {strategy} | {len(rs)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"GRPO baseline (seed 0, search held-out set): {runs[0]['baseline']:.1f}; "
                 f"distinct trainings in the cache: {len(CachedLoop.cache)}")
    (RESULTS / "search_efficiency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
