"""The evaluation contract every engine implements, so the loop, `poise train`, reflection, status and
the report work the same on the embedded sandbox (`tiny`) and on a real model (`trl`).

A backend trains a fixed start with an algorithm and scores the result on held-out benchmarks:

    evaluate(algorithm, seed, on_step, split) -> EvalResult(trajectory, metrics)
        trajectory: one row per RL step with `evaluation.keys.TRAJECTORY_KEYS` (reward, accuracy, validity,
                    entropy, response length, KL, clip fraction, grad norm, all-fail groups, ...)
        metrics:    the held-out schema of `evaluation.keys` (overall, length, validity, tiers, weights)
    evaluate_start(seed, split) -> EvalResult   the start itself, the bar every algorithm must clear
    split: "search" (the held-out set the search selects on) or "confirm" (the fresh one that confirms)

`BackendSpec` names a backend and its settings; it is what travels to a worker process and what the
archive records, so a resumed run can refuse another one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

from poise.algorithms.base import Algorithm

BACKENDS = ("tiny", "trl", "verl")


class BackendError(ValueError):
    """A backend's settings cannot work (a bad config file, a missing package, no GPU where one is needed);
    the message names the problem and the fix."""


class Unsupported(BackendError):
    """The backend cannot train what this algorithm asks for: the algorithm's setting, not poise, is the problem."""


def sandbox_only_message(name: str, backend: str) -> str:
    return (f"{name}: dynamic_sampling (DAPO's refill of groups without a signal) runs on the sandbox backend only; "
            f"--backend {backend} trains a fixed batch: remove dynamic_sampling from CONFIG, or train on the sandbox")


def sandbox_only(algorithm: Algorithm, backend: str) -> None:
    """Refuse what only the sandbox trainer runs, before a backend spends anything on it."""
    if algorithm.config.dynamic_sampling:
        raise Unsupported(sandbox_only_message(algorithm.name, backend))


@dataclass
class EvalResult:
    algorithm: str
    seed: int
    fidelity: str  # the label evaluations are archived under (tiny: the fidelity; trl: "trl")
    trajectory: list[dict]
    metrics: dict
    wall_s: float
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Tier:
    """One held-out benchmark as tables show it: its name, how it is scored, its weight in Overall."""

    name: str
    metric: str  # "pass@k" | "greedy"
    weight: float


@dataclass(frozen=True)
class BackendSpec:
    """Which engine, with which settings. ``fidelity`` sizes the tiny sandbox; ``config`` is the parsed
    backend config file of the others (TOML: model, data, benchmarks, generation, trainer)."""

    name: str = "tiny"
    fidelity: str = "standard"
    config: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The fidelity label its evaluations are archived under."""
        return self.fidelity if self.name == "tiny" else self.name

    @property
    def describe(self) -> str:
        """What a view says the run trains on: the sandbox's fidelity, or the backend's name."""
        return f"fidelity {self.fidelity}" if self.name == "tiny" else f"backend {self.name}"

    def to_dict(self) -> dict:
        return {"name": self.name, "fidelity": self.fidelity, "config": self.config}

    @classmethod
    def from_dict(cls, d: dict) -> "BackendSpec":
        return cls(d.get("name", "tiny"), d.get("fidelity", "standard"), d.get("config"))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class Backend(Protocol):
    spec: BackendSpec
    steps: int  # RL steps of one training (progress bars, estimates)
    tiers: tuple[Tier, ...]

    def prepare(self, progress: Callable[[int, int, float], None] | None = None,
                log: Callable[[str], None] = lambda s: None) -> None:
        """What every evaluation starts from, built once and cached (tiny: the SFT warm start; trl: the
        model converted to a trainable checkpoint). ``progress(i, n, loss)`` reports long work."""
        ...

    def evaluate(self, algorithm: Algorithm, seed: int, on_step: Callable[[int, dict], None] | None = None,
                 split: str = "search") -> EvalResult:
        """Train the start with ``algorithm`` (its hooks may run in the hook process), score on ``split``.
        Raises `poise.algorithms.contract.CandidateError` when the algorithm fails."""
        ...

    def evaluate_start(self, seed: int, split: str = "search") -> EvalResult:
        ...

    def fingerprint(self) -> str:
        """What its numbers depend on besides the algorithm; a resumed run refuses another one."""
        ...

    def expected_s(self, threads: int) -> float:
        """Rough wall time of one evaluation on this machine (estimates and the default time limit)."""
        ...


def default_timeout_s(backend: Backend, threads: int) -> float:
    """10x the expected wall time of one evaluation, more with fewer than 2 threads."""
    return 10 * backend.expected_s(threads) * max(1, 2 // max(1, threads))
