"""Run one evaluation in a contained child process, streaming its progress back.

Candidate code is untrusted: it is loaded and executed only in the child, never in the caller. The
child runs under ``poise.verify.sandbox``: its own process group (killed on timeout and after every
run), no network, a scrubbed environment, a private working folder, an address-space limit and an
audit hook. A failure of the candidate (bad file, exception, NaN, wrong shapes) comes back as an
``EvalFailure`` with a clear message; a child that dies without answering is reported with its exit
code.
"""

from __future__ import annotations

import linecache
import math
from dataclasses import dataclass
from typing import Callable

from poise.algorithms import AlgorithmError, algorithm_from_source, load_algorithm
from poise.backends.tiny import EvalResult, evaluate, pick_device
from poise.evaluation.fidelity import get_fidelity
from poise.sandbox.sft import cache_dir, cached_sft_file
from poise.sandbox.trainer import CandidateError
from poise.verify.sandbox import Limits, run_sandboxed

# Address space an evaluation may map beyond the child's baseline (torch and poise, ~0.65 GB). Training
# and scoring the standard model peaks at ~2.0 GB of address space (1.6 GB resident: the 2048-row
# decoding batches of the held-out suite); 8 GB leaves room for more threads and larger fidelities
# while still stopping a runaway allocation. No limit on CUDA, which reserves tens of GB of addresses.
EVAL_MEMORY_MB = 8192


@dataclass
class EvalFailure:
    algorithm: str
    seed: int
    # "load" (the file is unusable), "candidate" (it misbehaved in training), "memory" (it ran out of
    # memory), "crash", "timeout", "internal"
    kind: str
    message: str


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the child needs to rebuild the algorithm: a built-in name, or a file's source and path."""

    name: str
    source: str | None = None  # None for a built-in
    origin: str = ""


def evaluate_in_child(payload: dict, emit: Callable[[dict], None]) -> dict:
    """The sandbox target: load the algorithm, train and score it, stream each step's row. Everything it
    needs is imported with this module, before the sandbox's audit hook goes in."""
    spec = AlgorithmSpec(**payload["spec"])
    if spec.source is not None:  # so error messages can quote the candidate's line
        linecache.cache[spec.origin] = (len(spec.source), None, spec.source.splitlines(True), spec.origin)
    try:
        algo = load_algorithm(spec.name) if spec.source is None else \
            algorithm_from_source(spec.source, spec.name, spec.origin)
    except AlgorithmError as e:
        return {"failure": "load", "message": str(e)}
    try:
        res = evaluate(algo, payload["fidelity"], payload["seed"], on_step=lambda i, row: emit({"step": i, "row": row}),
                       split=payload.get("split", "search"))
    except CandidateError as e:
        memory = any(p in str(e).lower() for p in ("memoryerror", "can't allocate memory", "out of memory"))
        return {"failure": "memory" if memory else "candidate", "message": str(e)}
    return {"result": res.to_dict()}


def _uses_cuda() -> bool:
    return pick_device().type == "cuda"


def run_evaluation(spec: AlgorithmSpec, fidelity: str, seed: int, threads: int = 2,
                   on_step: Callable[[int, dict], None] | None = None,
                   timeout_s: float | None = None, memory_mb: int | None = EVAL_MEMORY_MB,
                   split: str = "search") -> EvalResult | EvalFailure:
    """Evaluate in a sandboxed child process; call ``on_step`` in this process as steps finish.
    ``memory_mb`` bounds the child's address space beyond its baseline (None: no bound; always none on CUDA).
    ``split`` picks the held-out set ("confirm" for re-evaluating discoveries)."""
    cache = cache_dir()  # resolved here: the child's HOME is its private folder
    cache.mkdir(parents=True, exist_ok=True)
    fid = get_fidelity(fidelity)
    # the child may write the cache only to create a missing warm start; once it exists, no candidate can
    # touch the file every later evaluation starts from
    writable = () if cached_sft_file(fid.model, fid.sft, fid.eval.heldout_size, fid.eval.heldout_seed) else (cache,)
    limits = Limits(timeout_s=math.inf if timeout_s is None else timeout_s, threads=threads,
                    memory_mb=None if _uses_cuda() else memory_mb)

    def relay(msg: dict) -> None:
        if on_step is not None and isinstance(msg, dict) and "step" in msg:
            on_step(msg["step"], msg["row"])

    res = run_sandboxed("poise.backends.worker:evaluate_in_child",
                        {"spec": {"name": spec.name, "source": spec.source, "origin": spec.origin},
                         "fidelity": fidelity, "seed": seed, "split": split},
                        limits, on_message=relay, writable=writable, env={"POISE_CACHE": str(cache)},
                        preload=("torch._dynamo",))  # torch.optim imports it lazily, and it sets an env var
    if res.ok:
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
