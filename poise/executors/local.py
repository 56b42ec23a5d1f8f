"""The local executor: up to ``workers`` evaluations at a time on this machine, each in its own worker
process (`backends.worker`), which runs the candidate in its jailed hook process."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Callable

from poise.backends.worker import run_evaluation
from poise.executors import EvalJob
from poise.isolation.process import kill_all


class LocalExecutor:
    def __init__(self, workers: int):
        # threads only wait on the worker processes, which do the work
        self.pool = cf.ThreadPoolExecutor(max_workers=workers)

    def submit(self, job: EvalJob, on_step: Callable[[int, dict], None] | None = None) -> cf.Future:
        return self.pool.submit(run_evaluation, job.spec, job.backend, job.seed, threads=job.threads,
                                on_step=on_step, timeout_s=job.timeout_s, split=job.split)

    def shutdown(self, kill: bool = False) -> None:
        if kill:  # the worker processes live in their own sessions: Ctrl-C never reaches them
            kill_all()
        self.pool.shutdown(wait=True, cancel_futures=True)
