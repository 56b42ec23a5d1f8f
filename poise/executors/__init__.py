"""Where evaluations run. An executor takes `EvalJob`s and gives back futures of their results; the
loop alone writes the archive. `local.LocalExecutor` (a pool on this machine) is the default."""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass
from typing import Callable, Protocol

from poise.backends import BackendSpec, EvalResult
from poise.backends.worker import AlgorithmSpec, EvalFailure


class InfraError(RuntimeError):
    """Where evaluations run is broken (a cluster that keeps losing an evaluation, a node with another
    poise, resources no node has): not the candidate's fault, so the run stops with the message and its
    entry stays in flight, to be run again on ``--resume`` once the cluster is fixed."""


# EvalFailure.kind of an evaluation lost to the infrastructure: `discovery.evaluate.record` stops the run
INFRA = "infra"


@dataclass(frozen=True)
class EvalJob:
    """One training and held-out scoring of an algorithm."""

    spec: AlgorithmSpec
    backend: BackendSpec  # the engine and its settings (its label is what the archive files results under)
    seed: int
    split: str = "search"  # "confirm": the confirmation held-out set
    threads: int = 1
    timeout_s: float | None = None


class Executor(Protocol):
    def submit(self, job: EvalJob, on_step: Callable[[int, dict], None] | None = None) -> cf.Future:
        """Start ``job``; the future's result is an `EvalResult` or an `EvalFailure`. ``on_step(step, row)``
        is called as training steps finish (for progress bars)."""
        ...

    def shutdown(self, kill: bool = False) -> None:
        """Wait for what is running, or with ``kill`` stop it now (Ctrl-C, a crash)."""
        ...


__all__ = ["INFRA", "BackendSpec", "EvalFailure", "EvalJob", "EvalResult", "Executor", "InfraError"]

