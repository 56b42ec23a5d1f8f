"""How long `poise report` takes, end to end (the command, imports included), on real run data.

    python benchmarks/bench_report.py [--reps 3]

Two runs: the shipped archive of a real 8-candidate `poise discover` run (9 entries with the baseline),
and a 64-candidate run assembled from its entries (their real code, proposals, curves and metrics) in a
deeper tree, with rejected and failed entries, as a long search would leave. Results go to
benchmarks/results/report.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = HERE / "results" / "discover_concise.db"


def big_run(root: Path, n: int = 64, seed: int = 0) -> Path:
    from poise.discovery.archive import Archive

    src = Archive(SHIPPED, readonly=True)
    entries = src.entries()
    src.close()
    rng = random.Random(seed)
    root.mkdir(parents=True)
    a = Archive(root / "archive.db")
    a.set_meta("config", json.dumps({"budget": n, "directive": "accurate and concise", "fidelity": "standard",
                                     "strategy": "lineage", "eval_seed": 0}))
    base = entries[0]
    ids = [a.add_entry(base.name, base.code, base.proposal, [], 0)]
    for k in range(1, n + 1):
        e = entries[1 + (k - 1) % (len(entries) - 1)]
        parent = rng.choice(ids[-12:])  # a tree that keeps growing deeper, as lineage selection does
        gen = 1 + k // 8
        i = a.add_entry(f"{e.name}-{k}", e.code + f"\n# variant {k}\n", e.proposal, [parent], gen)
        ids.append(i)
        if k % 7 == 0:
            a.set_status(i, "rejected", "verification failed after 3 attempts: claim correct_above_wrong failed")
            continue
        a.set_verification(i, e.verification or {})
        a.set_status(i, "verified")
        a.set_status(i, "evaluating")
        if k % 13 == 0:
            a.set_status(i, "failed", "advantages are NaN at step 41")
            continue
        for v in e.search_evaluations():
            a.add_evaluation(i, v.seed, v.fidelity, v.trajectory, v.metrics, v.wall_s, "search")
        a.set_status(i, "evaluated")
        if e.reflection:
            a.set_reflection(i, e.reflection)
    a.set_status(0, "verified")
    a.set_status(0, "evaluating")
    for v in base.evaluations:
        a.add_evaluation(0, v.seed, v.fidelity, v.trajectory, v.metrics, v.wall_s, v.purpose)
    a.set_status(0, "evaluated")
    a.close()
    return root


def time_report(run: Path, reps: int) -> dict:
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "poise.cli", "report", str(run), "-o", str(run / "report.html")],
                       check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(walls), "max_s": max(walls), "reps": reps,
            "mb": (run / "report.html").stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="poise-bench-report-"))
    try:
        shipped = tmp / "shipped"
        shipped.mkdir()
        shutil.copy(SHIPPED, shipped / "archive.db")
        out = {"shipped (8 candidates, 9 entries)": time_report(shipped, args.reps),
               "assembled (64 candidates, 65 entries)": time_report(big_run(tmp / "big"), args.reps)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (HERE / "results" / "report.json").write_text(json.dumps(out, indent=2))
    for k, v in out.items():
        print(f"{k}: median {v['median_s']:.2f} s, max {v['max_s']:.2f} s over {v['reps']}, {v['mb']:.1f} MB")


if __name__ == "__main__":
    main()
