"""Run one evaluation in a worker process, streaming its progress back.

The worker is trusted: it trains the policy and scores it (the backend: ``poise.backends.tiny``,
``poise.backends.trl``), and it never runs
candidate code. The candidate's hooks run in a jailed hook process that the worker starts
(``poise.isolation.hook``); the worker sends it detached tensors and checks what comes back. A failure
of the candidate (bad file, exception, NaN, wrong shapes, a hook that hangs or dies) comes back as an
``EvalFailure`` with a clear message; a worker that dies without answering is reported with its exit
code.
"""

from __future__ import annotations

import linecache
import math
from dataclasses import dataclass
from typing import Callable

from poise.algorithms import AlgorithmError, builtin_source, load_algorithm
from poise.algorithms.base import FIXED_BUDGET
from poise.backends import BackendSpec, EvalResult, get_backend
from poise.backends.base import Unsupported
from poise.backends.tiny import pick_device
from poise.isolation.hook import HookError, HookLimits, HookProcess
from poise.isolation.process import Limits, mentions_memory, run_in_child
from poise.sandbox.sft import cache_dir
from poise.sandbox.trainer import CandidateError

# Address space an evaluation may map beyond the worker's baseline (torch and poise, ~0.65 GB). Training
# and scoring the standard model peaks at ~2.0 GB of address space (1.6 GB resident: the 2048-row
# decoding batches of the held-out suite); 8 GB leaves room for more threads and larger fidelities
# while still stopping a runaway allocation. No limit on CUDA, which reserves tens of GB of addresses.
EVAL_MEMORY_MB = 8192


@dataclass
class EvalFailure:
    algorithm: str
    seed: int
    # "load" (the file is unusable), "candidate" (it misbehaved in training), "memory" (it ran out of
    # memory), "crash", "timeout", "internal", "infra" (where it ran is broken: executors.INFRA)
    kind: str
    message: str


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the worker needs to rebuild the algorithm: a built-in name, or a file's source and path.

    ``jailed``: whether the hook process runs in the jail (``poise.isolation.choose_isolation`` decides).
    ``in_process``: run a built-in's hooks in the worker itself, with no hook process: poise's own code,
    for the benchmarks and the parity test that measure what the hook process costs and changes."""

    name: str
    source: str | None = None  # None for a built-in
    origin: str = ""
    jailed: bool = True
    in_process: bool = False
    # a search's candidate: refused if its CONFIG, as loaded here, buys extra rollouts (the verifier's load of
    # the same code may have seen another CONFIG: module-level code can tell the two loads apart)
    fixed_budget: bool = False


def evaluate_in_child(payload: dict, emit: Callable[[dict], None]) -> dict:
    """The worker's target: start the candidate's hook process, train and score, stream each step's row."""
    spec = AlgorithmSpec(**payload["spec"])
    source = spec.source if spec.source is not None else builtin_source(spec.name)
    origin = spec.origin or f"builtin:{spec.name}"
    linecache.cache[origin] = (len(source), None, source.splitlines(True), origin)  # messages quote its lines

    backend = get_backend(BackendSpec.from_dict(payload["backend"]))
    if hasattr(backend, "jailed"):  # a backend that runs the candidate elsewhere too (verl) follows the run's decision
        backend.jailed = spec.jailed

    def run(algo, isolation: list[str]) -> dict:
        if spec.fixed_budget and algo.config.dynamic_sampling:
            return {"failure": "load", "message": FIXED_BUDGET}
        res = backend.evaluate(algo, payload["seed"], on_step=lambda i, row: emit({"step": i, "row": row}),
                               split=payload.get("split", "search"))
        res.info["isolation"] = isolation
        return {"result": res.to_dict()}

    try:
        if spec.in_process:
            if spec.source is not None:
                raise ValueError("only a built-in may run in process: candidate code runs in the hook process")
            return run(load_algorithm(spec.name), ["in-process"])
        # its CPU time, all threads, is capped at the evaluation's own wall-clock limit
        cpu_s = int(payload["timeout_s"]) if payload.get("timeout_s") else None
        limits = HookLimits(call_timeout_s=payload.get("hook_timeout_s") or HookLimits.call_timeout_s, cpu_s=cpu_s)
        with HookProcess(source, spec.name, origin, jailed=spec.jailed, threads=payload["threads"],
                         limits=limits) as hook:
            algo = hook.algorithm()
            out = run(algo, hook.layers)
            if "result" in out:
                out["result"]["info"]["hook_calls"] = hook.calls
                out["result"]["info"]["hook_s"] = hook.call_s
            return out
    except (AlgorithmError, HookError) as e:
        if isinstance(e, AlgorithmError) or e.kind == "load":
            return {"failure": "load", "message": str(e)}
        if e.kind == "jail":
            return {"failure": "internal", "message": str(e)}
        return {"failure": "memory" if e.kind == "memory" else "candidate", "message": str(e)}
    except Unsupported as e:  # the backend cannot train what the candidate asks for (its message says why)
        return {"failure": "load", "message": str(e)}
    except CandidateError as e:
        memory = mentions_memory(str(e))
        return {"failure": "memory" if memory else "candidate", "message": str(e)}


def _uses_cuda() -> bool:
    return pick_device().type == "cuda"


def run_evaluation(spec: AlgorithmSpec, backend: BackendSpec | str, seed: int, threads: int = 2,
                   on_step: Callable[[int, dict], None] | None = None,
                   timeout_s: float | None = None, memory_mb: int | None = EVAL_MEMORY_MB,
                   split: str = "search", hook_timeout_s: float | None = None) -> EvalResult | EvalFailure:
    """Evaluate in a worker process; call ``on_step`` in this process as steps finish. ``backend``: the
    engine and its settings (a plain string is the tiny sandbox at that fidelity).
    ``memory_mb`` bounds the worker's address space beyond its baseline (None: no bound; always none on CUDA).
    ``split`` picks the held-out set ("confirm" for re-evaluating discoveries). ``hook_timeout_s`` bounds
    one call of a candidate's hook (default: ``HookLimits.call_timeout_s``)."""
    if isinstance(backend, str):
        backend = BackendSpec("tiny", backend)
    if backend.name != "tiny" and memory_mb == EVAL_MEMORY_MB:
        memory_mb = None  # a real model's footprint is its config's (EVAL_MEMORY_MB sizes the sandbox's)
    cache = cache_dir()  # resolved here: the worker's HOME is its private folder
    limits = Limits(timeout_s=math.inf if timeout_s is None else timeout_s, threads=threads,
                    memory_mb=None if _uses_cuda() else memory_mb)

    def relay(msg: dict) -> None:
        if on_step is not None and isinstance(msg, dict) and "step" in msg:
            on_step(msg["step"], msg["row"])

    res = run_in_child("poise.backends.worker:evaluate_in_child",
                       {"spec": {"name": spec.name, "source": spec.source, "origin": spec.origin,
                                 "jailed": spec.jailed, "in_process": spec.in_process,
                                 "fixed_budget": spec.fixed_budget},
                        "backend": backend.to_dict(), "seed": seed, "split": split, "threads": threads,
                        "hook_timeout_s": hook_timeout_s,
                        "timeout_s": timeout_s if timeout_s is not None and math.isfinite(timeout_s) else None},
                       limits, on_message=relay, env={"POISE_CACHE": str(cache)})
    if res.ok:
        assert res.value is not None  # evaluate_in_child always returns a dict
        if "result" in res.value:
            return EvalResult(**res.value["result"])
        return EvalFailure(spec.name, seed, res.value["failure"], res.value["message"])
    if res.kind == "timeout":
        return EvalFailure(spec.name, seed, "timeout", f"the evaluation took longer than {timeout_s:.0f}s and was stopped")
    if res.kind == "memory":
        return EvalFailure(spec.name, seed, "memory", f"the evaluation ran out of memory (its limit: {memory_mb} MB "
                                                      f"beyond the baseline): {res.message}")
    if res.kind == "error":  # an exception escaped evaluate(): a bug in poise itself
        return EvalFailure(spec.name, seed, "internal", res.traceback or res.message)
    why = "it was killed from outside" if res.kind == "killed" else "this usually means it crashed or ran out of memory"
    return EvalFailure(spec.name, seed, "crash", f"the evaluation process died (exit code {res.exit_code}) without a "
                                                 f"result; {why}\n{res.output}".rstrip())
