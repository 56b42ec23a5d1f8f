"""The Ray executor: each evaluation is a Ray task on the user's cluster (or on a Ray started here).

A task runs exactly what the local pool runs, `backends.worker.run_evaluation`: a worker process that
trains and scores, the candidate's hooks in their jailed hook process beside it, on whichever node Ray
placed the task. The task streams the training steps back (a Ray streaming generator), then the result;
the driver, the loop's process, alone writes the archive.

What can go wrong on a cluster, and what the driver does:
- a worker or a node is lost mid-evaluation (Ray raises a system error, never the candidate's): the
  evaluation starts over, on whatever node Ray picks, at most ``max_retries`` times; every lost attempt
  is recorded with the result (``info["attempts"]``) and the archive gets one evaluation, never two.
  Lost more often than that, it comes back as an ``INFRA`` failure: the run stops, the candidate is
  not blamed, and ``--resume`` runs it again once the cluster is fixed;
- an evaluation runs past its limit: the worker process stops itself at the limit as locally; should
  the task not answer ``grace_s`` later, the driver cancels it with ``ray.cancel(force=True)``, which
  kills the Ray worker; its worker process dies with it (``PR_SET_PDEATHSIG``), and so does what that
  started (the hook process; verl, which the verl backend starts with the same signal);
- Ctrl-C or a crash of the driver: every task in flight is cancelled; a SIGKILL of the driver ends its
  Ray job, whose tasks Ray then kills. Nothing finished is lost: the archive has it already;
- a node runs another poise than the driver's: its numbers would not be comparable, so the task
  refuses to train, and the run stops with a message that names the node (an ``INFRA`` failure);
- Ray cannot run the task at all (its runtime environment, placement, authentication): ``INFRA`` too;
  Ray's memory monitor killing it is a ``memory`` failure, as locally.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from poise.backends.worker import EvalFailure, run_evaluation
from poise.executors import INFRA, EvalJob

# Ray errors that mean the worker or node was lost (or shutdown(kill) cancelled the task): run it again
RETRYABLE_NAMES = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError",
                   "TaskCancelledError")
RAY_HINT = 'the Ray executor needs Ray: pip install "poise[ray]" (or pip install ray)'


@dataclass(frozen=True)
class RayConfig:
    """Where and with what each evaluation runs. ``address``: None starts a Ray on this machine for the
    run; "auto" joins the cluster this machine belongs to; "HOST:PORT" or "ray://HOST:PORT" another."""

    address: str | None = None
    cpus_per_eval: float | None = None  # None: the evaluation's torch threads
    gpus_per_eval: float = 0.0
    max_retries: int = 2  # runs after a lost worker or node; a candidate's own failure is never retried
    grace_s: float = 120.0  # past the evaluation's limit before the driver cancels its task

    def check(self) -> None:
        if self.cpus_per_eval is not None and self.cpus_per_eval <= 0:
            raise ValueError(f"--cpus-per-eval {self.cpus_per_eval:g}: an evaluation needs at least some CPU; "
                             f"give a positive number (e.g. 1)")
        if self.gpus_per_eval < 0:
            raise ValueError(f"--gpus-per-eval {self.gpus_per_eval:g}: give 0 (CPU only) or a positive number")
        if self.max_retries < 0:
            raise ValueError(f"max_retries {self.max_retries}: give 0 or more")


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A hash of this poise's source: a driver and a node that differ in it do not give comparable numbers."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".md", ".toml", ".json") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _node() -> str:
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


def evaluate_task(job: EvalJob, digest: str):
    """The Ray task (a generator): ("start", node), then ("step", i, row) as training goes, then
    ("result", EvalResult | EvalFailure)."""
    import queue

    node = _node()
    yield ("start", node)
    if digest != code_digest():
        yield ("result", EvalFailure(job.spec.name, job.seed, INFRA,
                                     f"the Ray node {node} runs another poise than the driver (source {code_digest()}, "
                                     f"the driver's {digest}); install the same poise on every node"))
        return
    q: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            q.put(("result", run_evaluation(job.spec, job.backend, job.seed, threads=job.threads,
                                            on_step=lambda i, row: q.put(("step", i, row)),
                                            timeout_s=job.timeout_s, split=job.split)))
        except BaseException as e:  # a bug in poise: reported, not swallowed
            q.put(("error", e))

    # run_evaluation blocks; a thread lets this generator hand its steps on as they come
    threading.Thread(target=work, daemon=True).start()
    while True:
        msg = q.get()
        if msg[0] == "error":
            raise msg[1]
        yield msg
        if msg[0] == "result":
            return


class RayExecutor:
    """Evaluations as Ray tasks, up to ``workers`` at a time (the loop never submits more)."""

    def __init__(self, workers: int, config: RayConfig | None = None):
        try:
            import ray
        except ImportError:
            raise ValueError(RAY_HINT) from None
        self.ray = ray
        self.config = config or RayConfig()
        self.config.check()
        self.started = False  # whether this executor started the Ray it uses (and so shuts it down)
        if not ray.is_initialized():
            kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            try:
                if self.config.address:
                    ray.init(address=self.config.address, **kw)
                else:
                    ray.init(address="local", **kw)  # a fresh one, never a cluster found on this machine
                    self.started = True
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ValueError(f"could not reach the Ray cluster at {self.config.address or 'this machine'}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; start it with "
                                 f"`ray start --head` or pass its address with --ray-address HOST:PORT") from None
        self.remote = ray.remote(num_returns="streaming", max_retries=0)(evaluate_task)
        self.pool = cf.ThreadPoolExecutor(max_workers=workers)  # threads only wait on Ray
        self.live: dict[int, Any] = {}  # id -> the streaming generator of a task in flight
        self.where: dict[int, str] = {}  # id -> the node a task in flight runs on
        self._lock = threading.Lock()
        self._ids = iter(range(1 << 62))
        self._stopping = False
        self._checked = False
        self._retryable = tuple(getattr(ray.exceptions, n) for n in RETRYABLE_NAMES)

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        return (f"Ray {'started here' if self.started else 'cluster ' + str(self.config.address)}: {nodes} node(s), "
                f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU")

    def resources(self, threads: int) -> dict:
        return {"num_cpus": self.config.cpus_per_eval if self.config.cpus_per_eval is not None else threads,
                "num_gpus": self.config.gpus_per_eval}

    def check_fits(self, threads: int) -> None:
        """Fail now, not after an endless wait, when no node could ever run an evaluation of ``threads``."""
        need = self.resources(threads)
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= need["num_cpus"] and r.get("GPU", 0) >= need["num_gpus"] for r in nodes):
            have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
            raise ValueError(f"no node of the Ray cluster can run an evaluation that needs {need['num_cpus']:g} CPU and "
                             f"{need['num_gpus']:g} GPU (its nodes: {have}); lower --cpus-per-eval / --gpus-per-eval "
                             f"or add nodes")

    def submit(self, job: EvalJob, on_step: Callable[[int, dict], None] | None = None) -> cf.Future:
        if not self._checked:  # once: a node lost later is what retries are for, not a reason to stop
            self.check_fits(job.threads)
            self._checked = True
        return self.pool.submit(self._drive, job, on_step)

    def _drive(self, job: EvalJob, on_step) -> Any:
        attempts: list[dict] = []
        while True:
            node, res = self._attempt(job, on_step)
            if not isinstance(res, BaseException):
                info = getattr(res, "info", None)
                if isinstance(info, dict):
                    info["ran_on"] = f"ray:{node}"
                    info["attempts"] = attempts
                elif node:  # a failure: where it happened goes into its message
                    res.message = f"{res.message} (on the Ray node {node})"
                return res
            first = str(res).splitlines()[0][:300] if str(res) else ""
            attempts.append({"node": node, "error": f"{type(res).__name__}: {first}"})
            if self._stopping or len(attempts) > self.config.max_retries:
                tried = "; ".join(f"{a['node'] or 'unscheduled'}: {a['error']}" for a in attempts)
                return EvalFailure(job.spec.name, job.seed, INFRA,
                                   "the run was stopped" if self._stopping else
                                   f"the Ray cluster lost it {len(attempts)} time(s) (a worker or a node died): {tried}")

    def _attempt(self, job: EvalJob, on_step) -> tuple[str, Any]:
        """One run of the task: (node, result), or (node, the Ray error that lost it: worth another run)."""
        ray = self.ray
        key = next(self._ids)
        with self._lock:  # registered and checked under the lock: shutdown(kill) cancels it or it never starts
            if self._stopping:
                return "", EvalFailure(job.spec.name, job.seed, INFRA, "the run was stopped")
            gen: Any = self.remote.options(**self.resources(job.threads)).remote(job, code_digest())
            self.live[key] = gen
        node, deadline = "", None
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:  # checked on every pass, steps or not
                    ray.cancel(gen, force=True)
                    return node, EvalFailure(job.spec.name, job.seed, "timeout",
                                             f"the evaluation took longer than {job.timeout_s:.0f}s and its Ray "
                                             f"task was cancelled")
                ready, _ = ray.wait([gen], timeout=1.0)
                if not ready:
                    continue
                try:
                    msg = ray.get(next(gen))
                except StopIteration:
                    return node, EvalFailure(job.spec.name, job.seed, "internal", "the Ray task ended without a result")
                if msg[0] == "start":
                    node = msg[1]
                    with self._lock:
                        self.where[key] = node
                    if job.timeout_s is not None:  # queueing for a free node does not count
                        deadline = time.monotonic() + job.timeout_s + self.config.grace_s
                elif msg[0] == "step":
                    if on_step is not None:
                        on_step(msg[1], msg[2])
                else:
                    return node, msg[1]
        except ray.exceptions.RayTaskError as e:  # poise itself raised on the node: a bug, reported as such
            return node, EvalFailure(job.spec.name, job.seed, "internal", f"on the Ray node {node}: {e}")
        except self._retryable as e:
            return node, e  # the worker or its node was lost, or the task was cancelled by shutdown(kill)
        except ray.exceptions.OutOfMemoryError as e:  # Ray's memory monitor killed it: the evaluation's size
            return node, EvalFailure(job.spec.name, job.seed, "memory", f"Ray stopped it for memory on {node}: {e}")
        except ray.exceptions.RayError as e:  # the cluster cannot run it (runtime env, placement, auth): no retry
            return node, EvalFailure(job.spec.name, job.seed, INFRA, f"{type(e).__name__} on the Ray cluster: {e}")
        finally:
            with self._lock:
                self.live.pop(key, None)
                self.where.pop(key, None)

    def shutdown(self, kill: bool = False) -> None:
        if kill:
            with self._lock:
                self._stopping = True
                live = list(self.live.values())
            for gen in live:
                try:
                    self.ray.cancel(gen, force=True)
                except Exception:  # already finished or its node is gone
                    pass
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.started:
            self.ray.shutdown()

