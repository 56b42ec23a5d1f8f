"""The closed loop: select -> propose -> implement and verify -> evaluate -> reflect -> archive.

    archive (SQLite) --select parent--> proposer --> implementer <--errors-- verifier (hook process)
         ^                                                                      |
         +---- reflection <---- curves + held-out metrics <---- evaluation workers (hook process)

Each phase is its own module; this one only decides what happens next:

    select           discovery/selection.py   which entry is the parent (and which must race first)
    propose          discovery/propose.py     what the proposer is shown; agents/roles.py who proposes
    implement+verify verify/implement.py      implementer <-> verifier attempts, review, duplicates
    evaluate         discovery/evaluate.py    entries to the executor (executors/), results to the archive
    reflect          reflect/phase.py         curves and metrics -> the archived reflection
    confirm          discovery/confirm.py     the best re-trained on fresh seeds, on the confirmation set

Everything a run knows lives in its archive, written as it happens, so a run stopped by Ctrl-C, a
crash or SIGKILL resumes from the archive: candidates whose evaluation had finished are kept and never
re-run; candidates in flight (proposed, verified or evaluating) are picked up again. The budget rule
is `RunState`'s (discovery/state.py), which `poise status` reads too.

Seeds: every search evaluation uses the same training seed (``eval_seed``), so candidates are compared
on paired runs; racing adds search seeds to a candidate before it may lead or be a parent twice.
After the search, the best ``reeval_top`` candidates and the baseline are trained again on fresh seeds
and scored on the *confirmation* held-out set, disjoint from the one that selected them; only a
candidate that beats the baseline there, with a confidence interval, is called a discovery.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path

from poise.backends import get_backend
from poise.backends.base import default_timeout_s
from poise.discovery import propose
from poise.discovery.archive import Archive, Entry
from poise.discovery.confirm import confirm_fidelity
from poise.discovery.evaluate import Evaluations, Racing, record
from poise.discovery.events import Events
from poise.discovery.outcome import RunSummary, summarize, to_confirm
from poise.discovery.selection import SelectionConfig, nodes_from_archive, select, to_race
from poise.discovery.settings import DiscoverConfig, open_run
from poise.discovery.state import RunState
from poise.executors import Executor
from poise.executors.local import LocalExecutor
from poise.reflect.phase import reflect_entry
from poise.verify.implement import OUT_OF_BUDGET, VERIFIED, Implementation
from poise.verify.verifier import VERIFY_LIMITS

__all__ = ["DiscoverConfig", "Events", "Loop", "RunSummary"]

MAX_PROPOSER_FAILURES = 3  # an LLM proposer failing this many rounds in a row is not going to recover


class Loop:
    def __init__(self, root: Path, cfg: DiscoverConfig, events: Events | None = None, resume: bool = False,
                 given: frozenset[str] | None = None, executor: Executor | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.archive = Archive(self.root / "archive.db")
        self.events = events or Events()
        try:
            run = open_run(self.archive, self.root, cfg, resume, given, self.events.message)
        except BaseException:
            self.archive.close()
            raise
        cfg = run.cfg
        self.cfg, self.changes, self.objective = cfg, run.changes, run.objective
        self.agents, self.isolation = run.agents, run.isolation
        self.rng = random.Random(f"discover/{cfg.search_seed}/{len(self.archive.entries())}")
        self.threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))
        self.timeout = cfg.eval_timeout_s or default_timeout_s(get_backend(cfg.backend_spec), self.threads)
        self.executor = executor
        self.selection_cfg = SelectionConfig(race_seeds=cfg.race_seeds)
        self.racing = Racing(cfg.eval_seed, cfg.race_seeds, cfg.fidelity, race_baseline=cfg.paired)
        self.verify_limits = dataclasses.replace(VERIFY_LIMITS, timeout_s=cfg.verify_timeout_s)
        self.round = len(self.archive.events(kind="select"))
        self.confirm_ids: list[int] = []  # entries to re-evaluate beside the top ones (poise discover --confirm)
        self.implementation = Implementation(self.archive, self.agents, self.verify_limits, self.isolation.jailed,
                                             cfg.max_attempts, self.events.message)
        self.llm_spent = False  # set when the LLM budget runs out: no new LLM work, finish what is in flight
        self.proposer_failures = 0  # consecutive rounds in which an LLM proposer gave nothing usable

    def close(self) -> None:
        self.archive.close()

    def baseline(self) -> Entry:
        return self.archive.get(0)

    def state(self) -> RunState:
        """The run's state now, from one snapshot of the archive."""
        return RunState.read(self.archive, self.objective, self.cfg.fidelity, self.cfg.budget,
                             promote=self.cfg.promote, paired=self.cfg.paired)

    def finished(self) -> int:
        """Candidates whose training has ended (a resumed run trains the in-flight ones again)."""
        return self.state().finished()

    # ------------------------------------------------------------------------------------------------
    # the phases, in the order of a round

    def ensure_baseline(self) -> Entry:
        if not self.archive.entries():
            self.implementation.add_baseline(self.cfg.directive)
        return self.baseline()

    def next_proposals(self) -> int:
        """Select a parent and write the round's proposals into the archive as "proposed" entries; -1
        when racing seeds must come in first."""
        if self.racing.pending:
            return -1  # racing evaluations are still running: this round's selection waits for their seeds
        state = self.state()
        nodes = nodes_from_archive(self.archive, propose.features, fidelity=self.cfg.fidelity,
                                   paired=self.cfg.paired)
        if nodes:
            base = state.baseline.search
            rng_state = self.rng.getstate()
            parent_id, scores = select(self.cfg.strategy, nodes, self.objective, base, self.selection_cfg,
                                       self.rng, self.round)
            race = [i for i in to_race(nodes, parent_id, self.objective, base, self.selection_cfg)
                    if i not in self.racing.raced]
            if race:
                self.rng.setstate(rng_state)  # the round is decided again once the seeds are in
                self.racing.start(self.archive, race, self.round + 1, self.events.message)
                return -1
        else:  # the first round, while the baseline trains: the root is the only possible parent
            parent_id, scores = 0, []
        self.round += 1
        ctx = propose.build(state, parent_id, self.objective, self.cfg.proposals_per_round, self.round, self.rng)
        parent = state.find(parent_id)
        assert parent is not None  # selection picks among the archive's entries
        made, failure, spent = propose.ask(self.archive, self.agents, ctx, parent.entry, scores, self.cfg.strategy,
                                           self.cfg.directive, self.events.message)
        self.llm_spent = self.llm_spent or spent
        self.proposer_failures = self.proposer_failures + 1 if failure else 0
        return made

    def implement_and_verify(self, e: Entry) -> bool:
        """Implementer <-> verifier (verify/implement.py). True when the entry is ready to train."""
        outcome = self.implementation(e)
        if outcome == OUT_OF_BUDGET:
            self.llm_spent = True
        return outcome == VERIFIED

    def _record(self, e: Entry, seed: int, purpose: str, res) -> None:
        if purpose == "race":
            self.racing.done(e.id, seed)
        if purpose == "promote":  # archived as a re-evaluation under the promotion backend's label
            record(self.archive, e, seed, "reeval", res, self.cfg.promote, self.events, self._reflect)
            return
        record(self.archive, e, seed, purpose, res, self.cfg.fidelity, self.events, self._reflect)

    def _reflect(self, e: Entry, failure: str | None = None) -> None:
        if reflect_entry(self.archive, e, self.objective, self.agents, use_llm=not self.llm_spent, failure=failure):
            self.llm_spent = True

    # ------------------------------------------------------------------------------------------------
    # the schedule

    def run(self) -> RunSummary:
        """Run to the end of the budget and the re-evaluation; the archive is closed afterwards."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> RunSummary:
        t0 = time.time()
        self.ensure_baseline()
        for e in self.archive.in_flight():  # resume: a candidate that was training starts over
            if e.status == "evaluating":
                self.archive.log("resume", e.id, note="its evaluation was in flight and is run again")
        executor = self.executor or LocalExecutor(self.cfg.workers)
        promote = self.cfg.promote_spec
        evals = Evaluations(self.archive, executor, self.events, backend=self.cfg.backend_spec, threads=self.threads,
                            timeout_s=self.timeout, jailed=self.isolation.jailed, promote=promote,
                            # the real model's own limit: --eval-timeout was set for the cheap backend
                            promote_timeout_s=default_timeout_s(get_backend(promote), self.threads) if promote else None)
        killed = False
        try:
            if not self.archive.has_evaluation(0, self.cfg.eval_seed, self.cfg.fidelity):
                evals.submit(self.baseline(), self.cfg.eval_seed, "baseline")
            while True:
                while len(evals) < self.cfg.workers:  # fill every free worker, verifying as needed
                    if self.racing.queue:
                        i, s = self.racing.queue.pop(0)
                        evals.submit(self.archive.get(i), s, "race")
                        continue
                    ready = self._next_ready(evals.busy())
                    if ready is None:
                        if self.racing.queue:
                            continue
                        break
                    if self.archive.get(ready.id).status != "evaluating":
                        self.archive.set_status(ready.id, "evaluating")
                    evals.submit(self.archive.get(ready.id), self.cfg.eval_seed, "search")
                if not len(evals):
                    break
                for e, seed, purpose, res in evals.wait():
                    self._record(e, seed, purpose, res)
            self._reevaluate(evals)
            self._promote(evals)
        except BaseException:
            killed = True  # Ctrl-C or a crash: stop the children now; what finished is archived
            raise
        finally:
            executor.shutdown(kill=killed)
        summary = self.summary()
        summary.wall_s = time.time() - t0
        (self.root / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2))
        self.archive.set_meta("finished", repr(time.time()))  # what `status` and the report call a finished run
        return summary

    def _next_ready(self, busy: set[int]) -> Entry | None:
        """The next entry to train: one that was training when the run stopped (resume) first, else a
        proposed one that passes verification, proposing a new round when none is left."""
        idle_rounds = 0
        while True:
            flight = [e for e in self.archive.in_flight() if e.id != 0 and e.id not in busy]
            for e in flight:
                if e.status == "evaluating":
                    return e
            state = self.state()
            if state.trained(live=True) >= self.cfg.budget:
                return None
            for e in flight:
                if e.status == "verified" or (not self.llm_spent and self.implement_and_verify(e)):
                    return self.archive.get(e.id)
            if self.llm_spent:
                return None  # the LLM budget is spent: train what is verified, propose nothing new
            if state.proposals >= state.max_proposals:
                self.events.message(f"stopping: {state.max_proposals} proposals made without filling the budget")
                return None
            if self.baseline().status != "evaluated" and self.round > 0:
                return None  # the first round proposes from the root while it trains; later ones need scores
            if self.proposer_failures >= MAX_PROPOSER_FAILURES:
                self.events.message(f"stopping: the proposer failed {self.proposer_failures} rounds in a row (see "
                                    f"the agent_failed events for its answers)")
                return None
            made = self.next_proposals()
            if made < 0:
                return None  # racing first: the loop starts the queued seeds and waits for them
            if made == 0:
                idle_rounds += 1
                if idle_rounds >= 5:
                    self.events.message("the proposer has no new design to offer; stopping early")
                    return None

    def _reevaluate(self, evals: Evaluations) -> None:
        top = self.to_confirm()
        self._train_again(evals, top, self.cfg.fidelity, "reeval",
                          f"re-evaluating {', '.join(e.name for e in top)} and the baseline on "
                          f"{len(self.cfg.reeval_seeds)} fresh seeds, on the confirmation held-out set")

    def _promote(self, evals: Evaluations) -> None:
        """The cascade: the best ``promote_top`` on the cheap backend, and GRPO, trained again on the
        promotion backend (the real model), on the confirmation seeds and held-out split."""
        if not self.cfg.promote:
            return
        top = [self.archive.get(c.id) for c in self.state().top(self.cfg.promote_top)]
        self._train_again(evals, top, self.cfg.promote, "promote",
                          f"promoting {', '.join(e.name for e in top)} and the baseline to the {self.cfg.promote} "
                          f"backend, {len(self.cfg.reeval_seeds)} fresh seeds each")

    def _train_again(self, evals: Evaluations, top: list[Entry], label: str, purpose: str, say: str) -> None:
        """``top`` and the baseline on each fresh seed not yet archived under ``label``'s confirmation set."""
        if not top or not self.cfg.reeval_seeds:
            return
        fid = confirm_fidelity(label)
        pending = [(e, s) for e in [self.baseline()] + top for s in self.cfg.reeval_seeds
                   if not self.archive.has_evaluation(e.id, s, fid)]
        if pending:
            self.events.message(say)
        evals.drain([(e, s, purpose) for e, s in pending], self.cfg.workers, self._record)

    # ------------------------------------------------------------------------------------------------
    # the outcome

    def to_confirm(self) -> list[Entry]:
        """The best ``reeval_top`` by the objective on the search set, plus any the user named (--confirm)."""
        return [self.archive.get(c.id) for c in to_confirm(self.state(), self.cfg.reeval_top, self.confirm_ids)]

    def summary(self) -> RunSummary:
        state = self.state()
        confirmed = to_confirm(state, self.cfg.reeval_top, self.confirm_ids)
        return summarize(self.root, state, confirmed, self.archive.llm_calls())
