"""The evaluate phase of the loop: archived entries go to the executor (search, racing and baseline
evaluations on the search held-out set, re-evaluations on fresh seeds on the confirmation set), and
each result comes back to be archived here, by the loop's process alone. A candidate that fails in
training is archived as failed, with a reflection that says so; impossible metrics never enter."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Callable, Iterator

from poise.algorithms import builtin_source
from poise.backends import BackendSpec
from poise.backends.worker import AlgorithmSpec, EvalFailure
from poise.discovery.archive import Archive, Entry
from poise.discovery.confirm import confirm_fidelity
from poise.evaluation.keys import check_metrics, hard_pass1
from poise.executors import INFRA, EvalJob, Executor, InfraError

# race: more search seeds of an evaluated entry; promote: a re-evaluation on the promotion backend (the cascade)
PURPOSES = ("baseline", "search", "race", "reeval", "promote")


class Evaluations:
    """The evaluations in flight, on ``executor``; ``events`` is the loop's `Events`."""

    def __init__(self, archive: Archive, executor: Executor, events, *, backend: BackendSpec, threads: int,
                 timeout_s: float | None, jailed: bool, promote: BackendSpec | None = None,
                 promote_timeout_s: float | None = None):
        self.archive, self.executor, self.events = archive, executor, events
        self.backend, self.threads, self.timeout_s, self.jailed = backend, threads, timeout_s, jailed
        self.promote, self.promote_timeout_s = promote, promote_timeout_s
        self.jobs: dict[cf.Future, tuple[Entry, int, str]] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def busy(self) -> set[int]:
        """Ids of the entries being evaluated now."""
        return {e.id for e, _, _ in self.jobs.values()}

    def submit(self, e: Entry, seed: int, purpose: str) -> None:
        assert purpose in PURPOSES, purpose
        self.archive.log("eval_start", e.id, seed=seed, purpose=purpose)
        self.events.eval_started(e, seed, purpose)
        spec = AlgorithmSpec(name=f"c{e.id}", source=e.code or builtin_source("grpo"), origin=f"archive:#{e.id}",
                             jailed=self.jailed, fixed_budget=True)
        promoted = purpose == "promote"
        assert not promoted or self.promote is not None, "a promotion needs the promotion backend"
        job = EvalJob(spec, self.promote if promoted and self.promote else self.backend, seed,
                      split="confirm" if purpose in ("reeval", "promote") else "search", threads=self.threads,
                      timeout_s=self.promote_timeout_s if promoted else self.timeout_s)
        fut = self.executor.submit(job, on_step=lambda i, row: self.events.eval_step(e.id, seed, i, row))
        self.jobs[fut] = (e, seed, purpose)

    def wait(self) -> Iterator[tuple[Entry, int, str, object]]:
        """(entry, seed, purpose, EvalResult | EvalFailure) of each evaluation that finished, after waiting
        for one. One at a time: the caller archives each before the next result is read, so an error in
        one never loses another that had finished."""
        done, _ = cf.wait(list(self.jobs), return_when=cf.FIRST_COMPLETED)
        for fut in done:
            e, seed, purpose = self.jobs.pop(fut)
            yield e, seed, purpose, fut.result()

    def drain(self, todo: list[tuple[Entry, int, str]], workers: int, on_result: Callable[..., None]) -> None:
        """Run every (entry, seed, purpose) of ``todo``, ``workers`` at a time, and what is in flight;
        ``on_result(entry, seed, purpose, result)`` as each one finishes."""
        todo = list(todo)
        while todo or self.jobs:
            while todo and len(self.jobs) < workers:
                self.submit(*todo.pop(0))
            for e, seed, purpose, res in self.wait():
                on_result(e, seed, purpose, res)


class Racing:
    """Racing seeds (selection.to_race says whose): a candidate about to lead the search or become a parent
    twice is first trained on the missing search seeds, ``eval_seed + 1, + 2, ...`` up to ``race_seeds``
    in all; the round's selection waits for them."""

    def __init__(self, eval_seed: int, race_seeds: int, fidelity: str, race_baseline: bool = True):
        self.seeds = [eval_seed + k for k in range(race_seeds)]
        self.fidelity = fidelity
        self.queue: list[tuple[int, int]] = []  # (entry id, seed) of racing evaluations to start
        self.pending: set[tuple[int, int]] = set()  # ... queued or in flight
        self.raced: set[int] = set()  # entries raced by this process (a failed seed is not retried forever)
        self.race_baseline = race_baseline  # paired runs: the baseline gets every racing seed too

    def start(self, archive: Archive, ids: list[int], round: int, say: Callable[[str], None]) -> None:
        # the baseline (entry 0) races too, once: a raced entry's means are paired through the baseline's on the
        # same seeds (confirm.paired_seed_metrics), which cancels each seed's shared luck
        if self.race_baseline and 0 not in ids and any(not archive.has_evaluation(0, s, self.fidelity)
                                                       and (0, s) not in self.pending for s in self.seeds):
            ids = [0, *ids]
        for i in ids:
            self.raced.add(i)
            missing = [s for s in self.seeds if not archive.has_evaluation(i, s, self.fidelity)
                       and (i, s) not in self.pending]
            e = archive.get(i)
            archive.log("race", i, seeds=missing, round=round)
            if i == 0:
                say(f"racing the baseline #0 {e.name} on {len(missing)} more search seed(s): raced candidates are "
                    f"compared with it seed by seed")
            else:
                say(f"racing #{i} {e.name}: {len(missing)} more search seed(s) before it may lead or be a parent again")
            for s in missing:
                self.queue.append((i, s))
                self.pending.add((i, s))

    def done(self, entry_id: int, seed: int) -> None:
        self.pending.discard((entry_id, seed))


def record(archive: Archive, e: Entry, seed: int, purpose: str, res, fidelity: str, events,
           reflect: Callable[..., None]) -> None:
    """Archive one finished evaluation; ``reflect(entry, failure=None)`` writes an entry's reflection."""
    fid = fidelity if purpose != "reeval" else confirm_fidelity(fidelity)
    if isinstance(res, EvalFailure) and res.kind == INFRA:  # the cluster's fault, not the candidate's
        archive.log("eval_failed", e.id, seed=seed, purpose=purpose, reason=f"{res.kind}: {res.message}"[:2000])
        raise InfraError(f"the evaluation of #{e.id} {e.name} (seed {seed}) could not run: {res.message}")
    if isinstance(res, EvalFailure):
        reason = f"{res.kind}: {res.message}"
        if purpose == "baseline":
            how = f"--backend {fidelity} --backend-config FILE" if fidelity in ("trl", "verl") else f"--fidelity {fidelity}"
            raise RuntimeError(f"the GRPO baseline itself failed to evaluate ({reason}); this is a problem "
                               f"of the setup, not of a candidate: check `poise train --algorithm grpo {how}`")
        if purpose == "search" and e.id != 0:
            archive.set_status(e.id, "failed", reason[:2000])
            reflect(archive.get(e.id), failure=reason)
        else:
            archive.log("eval_failed", e.id, seed=seed, purpose=purpose, reason=reason[:2000])
        events.eval_finished(e, seed, False, reason.splitlines()[0][:200])
        return
    problem = check_metrics(res.metrics)
    if problem is not None:
        reason = f"impossible metrics: {problem}"
        if purpose == "search" and e.id != 0:
            archive.set_status(e.id, "failed", reason)
        events.eval_finished(e, seed, False, reason)
        return
    stored = purpose if purpose != "race" else ("baseline" if e.id == 0 else "search")
    placement = {"ran_on": res.info.get("ran_on", "local"), "attempts": res.info.get("attempts", [])}
    archive.add_evaluation(e.id, seed, fid, res.trajectory, res.metrics, res.wall_s, stored, placement)
    archive.add_cost(e.id, wall_s=res.wall_s)
    # a racing seed adds to an evaluated entry: its status and (set-once) reflection stay as they are
    if purpose == "search" and e.id != 0:
        archive.set_status(e.id, "evaluated")
        reflect(archive.get(e.id))
    elif purpose == "baseline" and archive.get(0).status != "evaluated":
        archive.set_status(0, "evaluated")
        reflect(archive.get(0))
    m = res.metrics
    events.eval_finished(e, seed, True, f"Overall {m['overall']:.1f}, hard pass@1 {hard_pass1(m):.1f}, "
                                        f"length {m['length']:.1f}")
