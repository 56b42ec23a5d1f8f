"""What the Ray executor costs against the local pool, on this machine: the same evaluations (GRPO, one
seed each, the same threads), submitted the way the loop submits them, ``--workers`` at a time.

Reported per fidelity: the wall time of the batch on each executor, the difference per evaluation, and
Ray's start (``ray.init`` of a Ray started for the run, which `poise discover --executor ray` pays once).
The numbers of every evaluation are compared too: an executor changes where a training runs, never what
it gives.

    python benchmarks/bench_ray.py --fidelity smoke --evals 4 --workers 2
    python benchmarks/bench_ray.py --fidelity standard --evals 2 --workers 2
Results: benchmarks/results/ray_overhead.json (one entry per fidelity, replaced on a rerun)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poise.backends import BackendSpec  # noqa: E402
from poise.backends.worker import AlgorithmSpec, EvalFailure  # noqa: E402
from poise.executors import EvalJob  # noqa: E402
from poise.executors.local import LocalExecutor  # noqa: E402
from poise.executors.ray import RayConfig, RayExecutor  # noqa: E402

OUT = Path(__file__).parent / "results" / "ray_overhead.json"


def run(executor, jobs: list[EvalJob]) -> tuple[float, list]:
    t0 = time.perf_counter()
    futs = [executor.submit(j) for j in jobs]
    res = [f.result() for f in futs]
    for r in res:
        if isinstance(r, EvalFailure):
            raise SystemExit(f"an evaluation failed: {r.kind}: {r.message}")
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fidelity", default="smoke")
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    jobs = [EvalJob(AlgorithmSpec("grpo"), BackendSpec("tiny", a.fidelity), seed, threads=a.threads)
            for seed in range(a.evals)]
    # the SFT warm start is built once and cached: built (or loaded) here, outside the timing
    from poise.backends.tiny import sft_policy
    from poise.evaluation.fidelity import get_fidelity

    sft_policy(get_fidelity(a.fidelity))
    warm = [EvalJob(AlgorithmSpec("grpo"), BackendSpec("tiny", "smoke"), 0, threads=a.threads)]

    local = LocalExecutor(a.workers)
    t_local, r_local = run(local, jobs)
    local.shutdown()

    t0 = time.perf_counter()
    ray_ex = RayExecutor(a.workers, RayConfig(cpus_per_eval=a.threads))
    t_start = time.perf_counter() - t0
    run(ray_ex, warm)  # Ray's worker processes import torch and poise once (a smoke evaluation); the loop pays it once too
    t_warm = time.perf_counter() - t0 - t_start
    t_ray, r_ray = run(ray_ex, jobs)
    ray_ex.shutdown()

    same = all(x.metrics == y.metrics for x, y in zip(r_local, r_ray))
    row = {"fidelity": a.fidelity, "evals": a.evals, "workers": a.workers, "threads": a.threads,
           "local_s": round(t_local, 2), "ray_s": round(t_ray, 2),
           "overhead_per_eval_s": round((t_ray - t_local) / a.evals, 2),
           "overhead_pct": round(100 * (t_ray - t_local) / t_local, 1),
           "ray_start_s": round(t_start, 2), "first_smoke_eval_on_ray_s": round(t_warm, 2),
           "eval_s_local_mean": round(sum(r.wall_s for r in r_local) / a.evals, 2),
           "eval_s_ray_mean": round(sum(r.wall_s for r in r_ray) / a.evals, 2), "same_metrics": same}
    print(json.dumps(row))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    rows = [r for r in rows if r["fidelity"] != a.fidelity] + [row]
    OUT.write_text(json.dumps(rows, indent=2) + "\n")
    if not same:
        raise SystemExit("the executors gave different numbers for the same evaluations")


if __name__ == "__main__":
    main()
