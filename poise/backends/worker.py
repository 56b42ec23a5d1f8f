"""Run one evaluation in a separate process, streaming its progress back.

Candidate code is untrusted: it is loaded and executed only in the child, never in the caller. A
failure of the candidate (bad file, exception, NaN, wrong shapes) comes back as an ``EvalFailure`` with
a clear message; a child that dies without answering is reported with its exit code.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from poise.backends.tiny import EvalResult


@dataclass
class EvalFailure:
    algorithm: str
    seed: int
    kind: str  # "load" (the file is unusable), "candidate" (it misbehaved in training), "crash", "timeout", "internal"
    message: str


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the child needs to rebuild the algorithm: a built-in name, or a file's source and path."""

    name: str
    source: str | None = None  # None for a built-in
    origin: str = ""


def _child(spec: AlgorithmSpec, fidelity: str, seed: int, threads: int, q) -> None:
    import torch

    from poise.algorithms import AlgorithmError, algorithm_from_source, load_algorithm
    from poise.backends.tiny import evaluate
    from poise.sandbox.trainer import CandidateError

    torch.set_num_threads(threads)
    try:
        algo = load_algorithm(spec.name) if spec.source is None else \
            algorithm_from_source(spec.source, spec.name, spec.origin)
    except AlgorithmError as e:
        q.put(("error", "load", str(e)))
        return
    try:
        res = evaluate(algo, fidelity, seed, on_step=lambda i, row: q.put(("step", i, row)))
    except CandidateError as e:
        q.put(("error", "candidate", str(e)))
        return
    except Exception:  # a bug in poise itself: keep the traceback for the report
        q.put(("error", "internal", traceback.format_exc()))
        return
    q.put(("done", res))


def run_evaluation(spec: AlgorithmSpec, fidelity: str, seed: int, threads: int = 2,
                   on_step: Callable[[int, dict], None] | None = None,
                   timeout_s: float | None = None) -> EvalResult | EvalFailure:
    """Evaluate in a spawned child process; call ``on_step`` in this process as steps finish."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(spec, fidelity, seed, threads, q), daemon=True)
    p.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            try:
                msg = q.get(timeout=0.5)
            except queue_mod.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    return EvalFailure(spec.name, seed, "timeout", f"the evaluation took longer than {timeout_s:.0f}s "
                                                                   f"and was stopped")
                if not p.is_alive():
                    try:  # the last message may have landed just before the exit
                        msg = q.get(timeout=1.0)
                    except queue_mod.Empty:
                        return EvalFailure(spec.name, seed, "crash",
                                           f"the evaluation process died (exit code {p.exitcode}) without a result; "
                                           f"this usually means it ran out of memory or was killed")
                else:
                    continue
            if msg[0] == "step":
                if on_step is not None:
                    on_step(msg[1], msg[2])
            elif msg[0] == "done":
                return msg[1]
            else:
                return EvalFailure(spec.name, seed, msg[1], msg[2])
    finally:
        if p.is_alive():
            p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
