"""The closed loop: select -> propose -> implement -> verify -> evaluate -> reflect -> archive.

    archive (SQLite) --select parent--> proposer --> implementer <--errors-- verifier (hook process)
         ^                                                                      |
         +---- reflection <---- curves + held-out metrics <---- evaluation workers (hook process)

Everything a run knows lives in its archive, written as it happens, so a run stopped by Ctrl-C, a
crash or SIGKILL resumes from the archive: candidates whose evaluation had finished are kept and never
re-run; candidates in flight (proposed, verified or evaluating) are picked up again.

Budget: ``budget`` candidates reach training (evaluated or failed there); proposals rejected by the
verifier cost no training and do not count, but at most ``3 * budget`` proposals are made in all.

Seeds: every search evaluation uses the same training seed (``eval_seed``), so candidates are compared
on paired runs. After the search, the best ``reeval_top`` candidates and the baseline are trained again
on fresh seeds and scored on the *confirmation* held-out set, disjoint from the one that selected them;
only a candidate that beats the baseline there, with a confidence interval, is called a discovery.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from poise.agents import offline
from poise.agents.llm import BudgetExhausted, usage_by_role
from poise.agents.roles import AgentFailure, Agents, AgentsConfig, ProposalContext
from poise.algorithms import builtin_source
from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation
from poise.discovery.archive import Archive, ArchiveError, Entry, check_metrics, code_hash
from poise.discovery.confirm import Discovery, confirm, confirm_fidelity, confirm_metrics, search_means, stats
from poise.discovery.objective import Objective, run_objective
from poise.evaluation.fidelity import default_timeout_s, sandbox_fingerprint
from poise.discovery.selection import SelectionConfig, nodes_from_archive, select, to_race
from poise.isolation.hook import choose_isolation
from poise.isolation.process import kill_all
from poise.reflect.curves import Finding
from poise.reflect.diagnose import Reflection, reflect
from poise.sandbox.task import hard_pass1
from poise.verify.verifier import VERIFY_LIMITS, VerificationReport, verify


@dataclass
class DiscoverConfig:
    budget: int = 8
    directive: str = ""
    workers: int = 1
    fidelity: str = "standard"
    strategy: str = "lineage"  # lineage | greedy | random | tournament
    search_seed: int = 0  # seeds parent selection and the proposer's exploration
    eval_seed: int = 0  # the training seed of every search evaluation
    proposals_per_round: int = 2
    max_attempts: int = 3  # implement -> verify rounds before a proposal is rejected
    reeval_top: int = 2
    reeval_seeds: tuple[int, ...] = (1001, 1002, 1003)  # fresh seeds, never used by the search
    # racing: a candidate about to lead the search or become a parent twice is first trained on this many
    # search seeds (eval_seed, eval_seed+1, ...; see selection.to_race); 1 turns racing off
    race_seeds: int = 3
    eval_timeout_s: float | None = None  # per evaluation; None: 10x the fidelity's expected time
    verify_timeout_s: float = 30.0  # per verification (synthetic batches take about a second)
    threads: int | None = None  # torch threads per worker; None: cores // workers
    agents: AgentsConfig = field(default_factory=AgentsConfig)  # who plays each role (LLMs or offline)
    # run candidate code that poise did not write without the jail, where the jail cannot start (recorded)
    unsafe_no_jail: bool = False
    # the smallest confirmed change that counts as a discovery, per metric ({} = objective.MIN_EFFECT)
    min_effect: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["reeval_seeds"] = list(self.reeval_seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DiscoverConfig":
        d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        if "reeval_seeds" in d:
            d["reeval_seeds"] = tuple(d["reeval_seeds"])
        d.setdefault("race_seeds", 1)  # runs stored before racing existed did not race
        if isinstance(d.get("agents"), dict):
            a = {k: v for k, v in d["agents"].items() if k in {f.name for f in dataclasses.fields(AgentsConfig)}}
            if a.get("price") is not None:
                a["price"] = tuple(a["price"])
            d["agents"] = AgentsConfig(**a)
        return cls(**d)


# the settings a resumed run may change when the user names them; every other one must stay as stored
# (the re-evaluation's fresh seeds may only be extended)
_CHANGEABLE = ("budget", "workers", "threads", "eval_timeout_s", "verify_timeout_s", "reeval_top", "reeval_seeds",
               "agents", "unsafe_no_jail", "min_effect")


def _show(value, key: str) -> str:
    if key == "reeval_seeds":
        return f"{len(value)} ({', '.join(map(str, value))})" if value else "0"
    if key == "agents":
        who = value.llm or ", ".join(f"{r}={m}" for r, m in value.roles.items()) or "offline"
        return f"({who}, LLM budget {value.budget_tokens or 'none'} tokens / ${value.budget_usd or 'none'})"
    return "default" if value is None else str(value)


MAX_PROPOSER_FAILURES = 3  # an LLM proposer failing this many rounds in a row is not going to recover


class Events:
    """What the loop reports as it goes; the CLI turns these into progress bars and lines."""

    def message(self, text: str) -> None: ...
    def eval_started(self, entry: Entry, seed: int, purpose: str) -> None: ...
    def eval_step(self, entry_id: int, seed: int, step: int, row: dict) -> None: ...
    def eval_finished(self, entry: Entry, seed: int, ok: bool, text: str) -> None: ...


def _config_literal(code: str) -> str:
    """CONFIG as written (a literal), read without executing the code: it is part of behaviour."""
    try:
        for node in ast.parse(code).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CONFIG" for t in node.targets):
                return json.dumps(ast.literal_eval(node.value), sort_keys=True)
    except (SyntaxError, ValueError):
        pass
    return "{}"


@dataclass
class RunSummary:
    root: str
    objective: str
    evaluated: int
    rejected: int
    failed: int
    best_search: list[tuple[int, str, float]]  # (id, name, objective scalar on the search set)
    confirmed: list[Discovery] = field(default_factory=list)
    baseline_confirm: dict = field(default_factory=dict)
    wall_s: float = 0.0
    llm: dict = field(default_factory=dict)  # usage per agent role and in total (empty when no LLM was used)


class Loop:
    def __init__(self, root: Path, cfg: DiscoverConfig, events: Events | None = None, resume: bool = False,
                 given: frozenset[str] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.archive = Archive(self.root / "archive.db")
        self.events = events or Events()
        try:
            cfg = self._settings(cfg, resume, given)
            objective = run_objective(cfg.to_dict())  # a bad directive or minimum effect stops here, unrecorded
            # so do agents that cannot work together, a missing API key, or a jail that cannot start: all are
            # checked before anything of this invocation is written to the archive
            agents = Agents(cfg.agents, ledger=self.archive, on_retry=self.events.message)
            # an LLM implementer writes code poise did not: it runs only in the jail (or, explicitly, unsafely)
            isolation = choose_isolation(agents.llms["implementer"] is None, cfg.unsafe_no_jail)
            sandbox = sandbox_fingerprint(cfg.fidelity)
            stored = self.archive.get_meta("sandbox")
            if stored is not None and stored != sandbox:
                raise ArchiveError(f"{self.root} was evaluated on another version of the {cfg.fidelity!r} sandbox "
                                   f"(fingerprint {stored}, this poise has {sandbox}): its numbers would not compare "
                                   f"with new ones. Start a new run with another --out folder, or resume it with "
                                   f"the poise version that made it")
        except BaseException:
            self.archive.close()
            raise
        self.cfg = cfg
        self.archive.set_meta("config", json.dumps(cfg.to_dict()))
        self.archive.set_meta("sandbox", sandbox)
        if self.changes:
            self.archive.log("resume_settings", None, changes=self.changes)
        self.objective: Objective = objective
        self.rng = random.Random(f"discover/{cfg.search_seed}/{len(self.archive.entries())}")
        cores = os.cpu_count() or 1
        self.threads = cfg.threads or max(1, cores // max(1, cfg.workers))
        self.timeout = cfg.eval_timeout_s or default_timeout_s(cfg.fidelity, self.threads)
        self.selection_cfg = SelectionConfig(race_seeds=cfg.race_seeds)
        self.race_queue: list[tuple[int, int]] = []  # (entry id, seed) of racing evaluations to start
        self.racing: set[tuple[int, int]] = set()  # ... queued or in flight; a round waits for them
        self.raced: set[int] = set()  # entries raced by this process (a failed seed is not retried forever)
        self.verify_limits = dataclasses.replace(VERIFY_LIMITS, timeout_s=cfg.verify_timeout_s)
        self.round = len(self.archive.events(kind="select"))
        self.confirm_ids: list[int] = []  # entries to re-evaluate beside the top ones (poise discover --confirm)
        self.agents, self.isolation = agents, isolation
        if not self.isolation.jailed:  # kept for good: a run that once ran without the jail says so in every view
            self.events.message(self.isolation.warning)
            self.archive.set_meta("unjailed", json.dumps({"unsafe_no_jail": cfg.unsafe_no_jail,
                                                          "warning": self.isolation.warning}))
        self.llm_spent = False  # set when the LLM budget runs out: no new LLM work, finish what is in flight
        self.proposer_failures = 0  # consecutive rounds in which an LLM proposer gave nothing usable

    def _settings(self, cfg: DiscoverConfig, resume: bool, given: frozenset[str] | None) -> DiscoverConfig:
        """The run's settings. A resumed run keeps every stored one except those in ``given`` (the settings
        the user named, e.g. on the command line; None: every field of ``cfg``); of those, only the ones that
        cannot make the run incoherent may change, and each change is recorded in ``self.changes``."""
        self.changes: list[str] = []
        stored = self.archive.get_meta("config")
        if stored is None:
            return cfg
        if not resume:
            raise ArchiveError(f"{self.root} already holds a discovery run; pass --resume to continue it, "
                               f"or choose another --out folder")
        old = DiscoverConfig.from_dict(json.loads(stored))
        given = frozenset(f.name for f in dataclasses.fields(DiscoverConfig)) if given is None else given
        # agent options named one by one ("agents.budget_tokens") change only themselves
        parts = {g.split(".", 1)[1] for g in given if g.startswith("agents.")}
        if parts and "agents" not in given:
            cfg = dataclasses.replace(cfg, agents=dataclasses.replace(old.agents, **{p: getattr(cfg.agents, p)
                                                                                   for p in parts}))
            given = given | {"agents"}
        new = old
        for k in sorted(g for g in given if "." not in g):
            was, now = getattr(old, k), getattr(cfg, k)
            if now == was:
                continue
            flag = "--" + k.replace("_", "-").replace("search-seed", "seed")
            if k == "reeval_seeds" and len(now) < len(was):
                raise ArchiveError(f"--reeval-seeds {len(now)}: the run being resumed re-evaluates on {len(was)} "
                                   f"fresh seeds; it can extend them (a larger number), not drop any")
            if k == "reeval_seeds" and tuple(now[:len(was)]) != tuple(was):
                raise ArchiveError(f"the fresh seeds {list(now)} do not extend the stored {list(was)}")
            if k == "budget" and now < (done := self.finished()):
                raise ArchiveError(f"--budget {now}: the run being resumed has already trained {done} "
                                   f"candidates; give at least that many")
            if k not in _CHANGEABLE:
                raise ArchiveError(f"{flag} differs from the run being resumed ({now!r} vs {was!r}); a resumed run "
                                   f"keeps its settings, start a new run (another --out) to change it")
            if k == "min_effect":  # a named metric changes, the others stay as stored
                now = {**was, **now}
                if now == was:
                    continue
            new = dataclasses.replace(new, **{k: now})
            self.changes.append(f"{k.replace('_', ' ')} {_show(was, k)} -> {_show(now, k)}")
        return new

    def close(self) -> None:
        self.archive.close()

    # ------------------------------------------------------------------------------------------------
    # archive views

    def baseline(self) -> Entry:
        return self.archive.get(0)

    def _score(self, e: Entry) -> float | None:
        if e.status != "evaluated":
            return None
        m, b = search_means(e), search_means(self.baseline())
        if not m or not b:
            return None
        return self.objective.scalar(m, b)

    def _node(self, e: Entry) -> offline.ArchiveNode:
        refl = e.reflection or {}
        return offline.ArchiveNode(
            id=e.id, name=e.name, design=offline.design_of(e.proposal), status=e.status, score=self._score(e),
            parent_id=e.parent_ids[0] if e.parent_ids else None, operator=(e.proposal or {}).get("operator", ""),
            suggestions=list(refl.get("suggestions", [])), diagnosis=refl.get("diagnosis", ""),
            metrics=search_means(e), mechanism=(e.proposal or {}).get("mechanism", ""),
            ideas=list(refl.get("ideas", [])))

    def _features(self, e: Entry) -> list[float]:
        """Where an entry sits in mechanism space, for the GP and diversity terms of selection."""
        d = offline.design_of(e.proposal)
        if d is None:
            return _claimed_features(e)
        return [float(d.scale != "std"), float(d.scale.startswith("bernoulli")), float(d.validity == "mask"),
                float(d.all_fail != "zero"), float(d.length != "none"), min(d.length_coef, 3.0) / 3.0,
                float(d.clip_high > 0.2), float(d.loss_agg != "token-mean"), float(d.entropy_coef > 0),
                float(d.baseline != "group_mean")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.archive.entries(trajectories=False):
            if e.id != 0:
                out[e.status] = out.get(e.status, 0) + 1
        return out

    def _trained(self) -> int:
        """Candidates that count against the budget: trained, failed in training, or training now."""
        c = self.counts()
        return c.get("evaluated", 0) + c.get("failed", 0) + c.get("evaluating", 0)

    def finished(self) -> int:
        """Candidates whose training has ended (a resumed run trains the in-flight ones again)."""
        c = self.counts()
        return c.get("evaluated", 0) + c.get("failed", 0)

    # ------------------------------------------------------------------------------------------------
    # phases

    def ensure_baseline(self) -> Entry:
        if not self.archive.entries():
            design = offline.GRPO
            proposal = {"name": "GRPO", "hypothesis": "the starting point", "mechanism": "GRPO (group-normalised "
                        "outcome advantages, PPO clip 0.2, token-mean)", "math": "A_i = (r_i - mean_g r) / "
                        "(std_g r + eps)", "claims": design.claims(), "operator": "", "design":
                        dataclasses.asdict(design), "author": "builtin"}
            eid = self.archive.add_entry("GRPO", builtin_source("grpo"), proposal, [], 0, self.cfg.directive,
                                         status="evaluating")
            assert eid == 0
            # verified like every candidate: the report documents it, and its behaviour hash lets the loop
            # recognise a proposal that is GRPO in disguise
            report = verify(builtin_source("grpo"), "GRPO", design.claims(), self.verify_limits,
                            jailed=self.isolation.jailed)
            self.archive.set_verification(eid, report.to_dict())
            if report.ok:
                self.archive.set_behaviour(eid, report.behaviour + "|" + _config_literal(builtin_source("grpo")))
            self.archive.log("baseline", eid)
        return self.baseline()

    def next_proposals(self) -> int:
        """Select a parent and write the round's proposals into the archive as "proposed" entries."""
        if self.racing:
            return -1  # racing evaluations are still running: this round's selection waits for their seeds
        entries = self.archive.entries()
        nodes = nodes_from_archive(self.archive, self._features, fidelity=self.cfg.fidelity)
        if nodes:
            base = search_means(self.baseline())
            state = self.rng.getstate()
            parent_id, scores = select(self.cfg.strategy, nodes, self.objective, base, self.selection_cfg,
                                       self.rng, self.round)
            race = [i for i in to_race(nodes, parent_id, self.objective, base, self.selection_cfg)
                    if i not in self.raced]
            if race:
                self.rng.setstate(state)  # the round is decided again once the seeds are in
                self._race(race)
                return -1
        else:  # the first round, while the baseline trains: the root is the only possible parent
            parent_id, scores = 0, []
        self.round += 1
        by_id = {e.id: e for e in entries}
        parent = by_id[parent_id]
        all_nodes = [self._node(e) for e in entries]
        refs = self._references(parent, all_nodes)
        ctx = ProposalContext(parent=self._node(parent), parent_code=parent.code, parent_math=(parent.proposal or {})
                              .get("math", ""), nodes=all_nodes, references=refs, objective_text=self.objective.describe(),
                              objective_weights=self.objective.weights(), baseline_metrics=search_means(self.baseline()),
                              n=self.cfg.proposals_per_round, round=self.round, rng=self.rng)
        if self.agents.llms["proposer"] is not None:
            self.events.message(f"round {self.round}: asking {self.agents.llms['proposer'].spec.label} for "
                                f"{ctx.n} proposal(s) from #{parent_id} {parent.name}")
        failure = None
        try:
            props = self.agents.propose(ctx)
        except BudgetExhausted as e:
            props, failure = [], str(e)
            self.llm_spent = True
            self.events.message(f"{e}: no new proposals; finishing what is in flight")
        except AgentFailure as e:
            props, failure = [], e.reason
            self.archive.log("agent_failed", parent_id, role=e.role, reason=e.reason[:2000], answer=e.answer[:4000],
                             round=self.round)
            self.events.message(f"round {self.round}: the proposer failed: {e.reason[:200]}")
        self.proposer_failures = self.proposer_failures + 1 if failure else 0
        usage = self.agents.take_usage()
        top = {s.node_id: s for s in scores}.get(parent_id)
        self.archive.log("select", parent_id, strategy=self.cfg.strategy, round=self.round,
                         score=dataclasses.asdict(top) if top is not None else None,
                         references=[r.id for _, r in refs], tiers=[t for t, _ in refs],
                         proposals=[p.name for p in props], proposer_failure=failure, llm=usage.as_cost())
        self.events.message(f"round {self.round}: parent #{parent_id} {parent.name}"
                            + (f" -> {', '.join(p.name for p in props)}" if props else " (no new proposal)"))
        for p in props:
            gen = parent.generation + 1
            eid = self.archive.add_entry(p.name, "", p.to_dict(), p.builds_on[:1], gen, self.cfg.directive,
                                         context_ids=p.builds_on[1:])
            if usage.calls or usage.tokens:  # the proposer's call, shared by the proposals it produced
                self.archive.add_cost(eid, **{k: v / len(props) for k, v in usage.as_cost().items()})
        return len(props)

    def _race(self, ids: list[int]) -> None:
        """Queue the missing search seeds of `ids` (eval_seed + 1, + 2, ... up to race_seeds in all)."""
        seeds = [self.cfg.eval_seed + k for k in range(self.cfg.race_seeds)]
        for i in ids:
            self.raced.add(i)
            missing = [s for s in seeds if not self.archive.has_evaluation(i, s, self.cfg.fidelity)]
            e = self.archive.get(i)
            self.archive.log("race", i, seeds=missing, round=self.round + 1)
            self.events.message(f"racing #{i} {e.name}: {len(missing)} more search seed(s) before it may lead "
                                f"or be a parent again")
            for s in missing:
                self.race_queue.append((i, s))
                self.racing.add((i, s))

    def _references(self, parent: Entry, nodes: list[offline.ArchiveNode]) -> list[tuple[str, offline.ArchiveNode]]:
        """The tiered references: (tier, node) for the Pareto front, a complementary node, an exploratory
        (failed or rejected) one."""
        scored = [n for n in nodes if n.score is not None and n.id != parent.id]
        scored.sort(key=lambda n: -n.score)
        refs = [("pareto", n) for n in scored[:2]]  # the Pareto tier, approximated by the best by the objective
        pm = self._node(parent).metrics
        want = {k: w for k, w in self.objective.weights().items() if w > 0 and k in pm}
        if want:  # complementary: the best node on the objective term where the parent is weakest vs the baseline
            base = search_means(self.baseline())
            sign = lambda k: -1.0 if k == "length" else 1.0
            weakest = min(want, key=lambda k: sign(k) * (pm[k] - base.get(k, pm[k])))
            comp = max((n for n in scored if weakest in n.metrics), key=lambda n: sign(weakest) * n.metrics[weakest],
                       default=None)
            if comp is not None and all(comp.id != r.id for _, r in refs):
                refs.append(("complementary", comp))
        failed = [n for n in nodes if n.status in ("failed", "rejected")]
        if failed:
            refs.append(("exploratory", failed[-1]))
        return refs

    def implement_and_verify(self, e: Entry) -> bool:
        """Implementer <-> verifier, up to max_attempts. True when the entry is ready to train."""
        proposal = offline.Proposal(**{k: v for k, v in e.proposal.items()
                                       if k in {f.name for f in dataclasses.fields(offline.Proposal)}})
        feedback: list[str] | None = None
        attempts = []
        parent = self.archive.get(e.parent_ids[0], trajectories=False) if e.parent_ids else self.baseline()
        code, report = "", None
        llm = self.agents.llms["implementer"]
        try:
            for attempt in range(1, self.cfg.max_attempts + 1):
                if llm is not None:  # LLM calls can take minutes: say what is happening
                    self.events.message(f"#{e.id} {e.name}: implementing with {llm.spec.label}"
                                        + (f" (attempt {attempt}, with the verifier's errors)" if attempt > 1 else ""))
                try:
                    code, proposal = self.agents.implement(proposal, feedback, entry_id=e.id, attempt=attempt,
                                                           parent_name=parent.name, parent_code=parent.code,
                                                           previous_code=code)
                except AgentFailure as f:
                    attempts.append({"attempt": attempt, "ok": False, "stage": "implement", "errors": [f.reason],
                                     "wall_s": 0.0, "answer": f.answer[:4000]})
                    feedback = [f.reason]
                    continue
                report = verify(code, e.name, proposal.claims, self.verify_limits, jailed=self.isolation.jailed)
                if report.ok:
                    self._semantic_review(report, proposal, code, e.id, attempt)
                attempts.append({"attempt": attempt, "ok": report.ok, "stage": report.stage, "errors": report.errors,
                                 "wall_s": report.wall_s})
                if report.ok:
                    break
                feedback = report.errors
        except BudgetExhausted as b:
            # no money for another attempt: the entry stays proposed, so a resumed run with more budget picks it up
            self.llm_spent = True
            self._charge(e.id)
            self.archive.log("llm_budget", e.id, reason=str(b), attempts=attempts)
            self.events.message(f"#{e.id} {e.name}: {b}; left as proposed")
            return False
        self._charge(e.id)
        self.archive.add_cost(e.id, verify_s=sum(a["wall_s"] for a in attempts), attempts=len(attempts))
        if attempts[-1]["stage"] == "implement":  # the last attempt produced no code to verify
            report = VerificationReport(ok=False, stage="implement", errors=attempts[-1]["errors"])
        verification = {**report.to_dict(), "attempts": attempts}
        if code:
            self.archive.set_code(e.id, code, proposal.to_dict())
        self.archive.set_verification(e.id, verification)
        if not report.ok:
            self.archive.set_status(e.id, "rejected", f"verification failed after {len(attempts)} attempt(s): "
                                                      + "; ".join(report.errors)[:500])
            self.events.message(f"#{e.id} {e.name} rejected: {report.errors[0] if report.errors else report.stage}")
            return False
        behaviour = report.behaviour + "|" + _config_literal(code)
        twin = self.archive.find_code(code_hash(code))
        if twin is not None and twin.id != e.id:
            self.archive.set_status(e.id, "rejected", f"same code as #{twin.id} {twin.name}")
            return False
        twin = self.archive.find_behaviour(behaviour)
        if twin is not None and twin.id != e.id:
            self.archive.set_status(e.id, "rejected", f"behaves exactly like #{twin.id} {twin.name} on the probe "
                                                      f"batches; not evaluated twice")
            self.events.message(f"#{e.id} {e.name} is a duplicate of #{twin.id} {twin.name}")
            return False
        self.archive.set_behaviour(e.id, behaviour)
        self.archive.set_status(e.id, "verified")
        return True

    def _semantic_review(self, report: VerificationReport, proposal: offline.Proposal, code: str, entry_id: int,
                         attempt: int) -> None:
        """The tests passed: does the code implement the stated math? Only an LLM verifier answers this; its
        verdict becomes a check, and a mismatch fails the attempt with the verifier's reasons."""
        try:
            review = self.agents.review(proposal, code, report.checks, entry_id=entry_id, attempt=attempt)
        except AgentFailure as f:
            # strict: no verdict is not a pass, so unreviewed code never trains
            report.checks.append({"name": "semantic", "ok": False, "message": f.reason})
            report.ok, report.stage, report.errors = False, "semantic", [f"the semantic verifier gave no verdict "
                                                                         f"({f.reason})"]
            return
        if review is None:  # no LLM verifier: the property tests are the check
            return
        ok, reasons = review
        report.checks.append({"name": "semantic", "ok": ok, "message": "; ".join(reasons)})
        if not ok:
            report.ok, report.stage = False, "semantic"
            report.errors = ["the code does not implement the proposal's math: " + r
                             for r in (reasons or ["(no reason given)"])]

    def _charge(self, entry_id: int) -> None:
        """Book the LLM use since the last booking on the entry's cost."""
        usage = self.agents.take_usage()
        if usage.calls or usage.tokens or usage.seconds:
            self.archive.add_cost(entry_id, **usage.as_cost())

    def _evaluate(self, e: Entry, seed: int, purpose: str) -> tuple:
        """Runs in a pool thread; the evaluation runs in a worker, the candidate in its jailed hook process."""
        spec = AlgorithmSpec(name=f"c{e.id}", source=e.code or builtin_source("grpo"), origin=f"archive:#{e.id}",
                             jailed=self.isolation.jailed)
        split = "confirm" if purpose == "reeval" else "search"
        res = run_evaluation(spec, self.cfg.fidelity, seed, threads=self.threads,
                             on_step=lambda i, row: self.events.eval_step(e.id, seed, i, row),
                             timeout_s=self.timeout, split=split)
        return e, seed, purpose, res

    def _record(self, e: Entry, seed: int, purpose: str, res) -> None:
        fid = self.cfg.fidelity if purpose != "reeval" else self.cfg.fidelity + "/confirm"
        if purpose == "race":
            self.racing.discard((e.id, seed))
        if isinstance(res, EvalFailure):
            reason = f"{res.kind}: {res.message}"
            if purpose == "baseline":
                raise RuntimeError(f"the GRPO baseline itself failed to evaluate ({reason}); this is a problem "
                                   f"of the setup, not of a candidate: check `poise train --algorithm grpo "
                                   f"--fidelity {self.cfg.fidelity}`")
            if purpose == "search" and e.id != 0:
                self.archive.set_status(e.id, "failed", reason[:2000])
                self._reflect(self.archive.get(e.id), failure=reason)
            else:
                self.archive.log("eval_failed", e.id, seed=seed, purpose=purpose, reason=reason[:2000])
            self.events.eval_finished(e, seed, False, reason.splitlines()[0][:200])
            return
        problem = check_metrics(res.metrics)
        if problem is not None:
            reason = f"impossible metrics: {problem}"
            if purpose == "search" and e.id != 0:
                self.archive.set_status(e.id, "failed", reason)
            self.events.eval_finished(e, seed, False, reason)
            return
        stored = purpose if purpose != "race" else ("baseline" if e.id == 0 else "search")
        self.archive.add_evaluation(e.id, seed, fid, res.trajectory, res.metrics, res.wall_s, stored)
        self.archive.add_cost(e.id, wall_s=res.wall_s)
        # a racing seed adds to an evaluated entry: its status and (set-once) reflection stay as they are
        if purpose == "search" and e.id != 0:
            self.archive.set_status(e.id, "evaluated")
            self._reflect(self.archive.get(e.id))
        elif purpose == "baseline" and self.archive.get(0).status != "evaluated":
            self.archive.set_status(0, "evaluated")
            self._reflect(self.archive.get(0))
        m = res.metrics
        self.events.eval_finished(e, seed, True, f"Overall {m['overall']:.1f}, hard pass@1 {hard_pass1(m):.1f}, "
                                                 f"length {m['length']:.1f}")

    def _reflect(self, e: Entry, failure: str | None = None) -> None:
        evs = e.search_evaluations()
        parent = None
        if e.parent_ids:
            pe = self.archive.get(e.parent_ids[0])
            pevs = pe.search_evaluations()
            if pevs:
                parent = {"name": pe.name, "trajectory": [v.trajectory for v in pevs],
                          "metrics": [v.metrics for v in pevs]}
        if failure is not None or not evs:
            r = _failure_reflection(e, failure or "no evaluation finished")
        else:
            trajs, ms = [v.trajectory for v in evs], [v.metrics for v in evs]
            r = reflect(e.proposal or {}, trajs, ms, parent, self.objective.describe())
            if not self.llm_spent:
                try:
                    r = self.agents.reflect(r, e.proposal or {}, trajs, ms, parent, self.objective.describe(),
                                            entry_id=e.id, name=e.name)
                except BudgetExhausted as b:
                    self.llm_spent = True
                    r = dataclasses.replace(r, llm_error=str(b))
                self._charge(e.id)
        self.archive.set_reflection(e.id, r.to_dict())

    # ------------------------------------------------------------------------------------------------

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
        jobs: dict[cf.Future, tuple[int, int]] = {}
        max_proposals = 3 * self.cfg.budget
        pool = cf.ThreadPoolExecutor(max_workers=self.cfg.workers)
        try:
            def submit(entry: Entry, seed: int, purpose: str) -> None:
                self.archive.log("eval_start", entry.id, seed=seed, purpose=purpose)
                self.events.eval_started(entry, seed, purpose)
                jobs[pool.submit(self._evaluate, entry, seed, purpose)] = (entry.id, seed)

            base = self.baseline()
            if not self.archive.has_evaluation(0, self.cfg.eval_seed, self.cfg.fidelity):
                submit(base, self.cfg.eval_seed, "baseline")
            while True:
                # fill every free worker with a candidate, verifying as needed
                while len(jobs) < self.cfg.workers:
                    if self.race_queue:
                        i, s = self.race_queue.pop(0)
                        submit(self.archive.get(i), s, "race")
                        continue
                    e = self._next_ready(max_proposals, busy={i for i, _ in jobs.values()})
                    if e is None:
                        if self.race_queue:
                            continue
                        break
                    if self.archive.get(e.id).status != "evaluating":
                        self.archive.set_status(e.id, "evaluating")
                    submit(self.archive.get(e.id), self.cfg.eval_seed, "search")
                if not jobs:
                    break
                done, _ = cf.wait(list(jobs), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    jobs.pop(fut)
                    e, seed, purpose, res = fut.result()
                    self._record(e, seed, purpose, res)
            self._reevaluate(pool, submit, jobs)
        except BaseException:
            # Ctrl-C or a crash: stop the children now instead of waiting for them; what finished is archived
            kill_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        summary = self.summary()
        summary.wall_s = time.time() - t0
        (self.root / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2))
        self.archive.set_meta("finished", repr(time.time()))  # what `status` and the report call a finished run
        return summary

    def _next_ready(self, max_proposals: int, busy: set[int]) -> Entry | None:
        """The next entry to train: one that was training when the run stopped (resume) first, else a
        proposed one that passes verification, proposing a new round when none is left."""
        idle_rounds = 0
        while True:
            flight = [e for e in self.archive.in_flight() if e.id != 0 and e.id not in busy]
            for e in flight:
                if e.status == "evaluating":
                    return e
            if self._trained() >= self.cfg.budget:
                return None
            for e in flight:
                if e.status == "verified" or (not self.llm_spent and self.implement_and_verify(e)):
                    return self.archive.get(e.id)
            if self.llm_spent:
                return None  # the LLM budget is spent: train what is verified, propose nothing new
            if len(self.archive.entries()) - 1 >= max_proposals:
                self.events.message(f"stopping: {max_proposals} proposals made without filling the budget")
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

    def _reevaluate(self, pool, submit, jobs) -> None:
        top = self.to_confirm()
        if not top or not self.cfg.reeval_seeds:
            return
        fid = confirm_fidelity(self.cfg.fidelity)
        todo = [(e, s) for e in [self.baseline()] + top for s in self.cfg.reeval_seeds
                if not self.archive.has_evaluation(e.id, s, fid)]
        if todo:
            self.events.message(f"re-evaluating {', '.join(e.name for e in top)} and the baseline on "
                                f"{len(self.cfg.reeval_seeds)} fresh seeds, on the confirmation held-out set")
        pending = list(todo)
        while pending or jobs:
            while pending and len(jobs) < self.cfg.workers:
                e, s = pending.pop(0)
                submit(e, s, "reeval")
            done, _ = cf.wait(list(jobs), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                jobs.pop(fut)
                e, seed, purpose, res = fut.result()
                self._record(e, seed, purpose, res)

    def to_confirm(self) -> list[Entry]:
        """The best ``reeval_top`` by the objective on the search set, plus any the user named (--confirm)."""
        top = self.top_candidates(self.cfg.reeval_top)
        for i in self.confirm_ids:
            e = self.archive.get(i)
            if e.status != "evaluated":
                raise ArchiveError(f"--confirm {i}: entry #{i} {e.name} is {e.status}, not evaluated; only an "
                                   f"evaluated candidate can be re-evaluated")
            if e.id != 0 and all(e.id != t.id for t in top):
                top.append(e)
        return top

    def top_candidates(self, k: int) -> list[Entry]:
        scored = [(self._score(e), e) for e in self.archive.entries("evaluated") if e.id != 0]
        scored = [(s, e) for s, e in scored if s is not None]
        scored.sort(key=lambda t: (-t[0], t[1].id))
        return [e for _, e in scored[:k]]

    def summary(self) -> RunSummary:
        c = self.counts()
        best = [(e.id, e.name, round(self._score(e), 3)) for e in self.top_candidates(5)]
        out = RunSummary(str(self.root), self.objective.describe(), c.get("evaluated", 0), c.get("rejected", 0),
                         c.get("failed", 0), best, llm=usage_by_role(self.archive.llm_calls()))
        base = confirm_metrics(self.baseline(), self.cfg.fidelity)
        if len(base) >= 2:
            out.baseline_confirm = stats(base)
            for e in self.to_confirm():
                ms = confirm_metrics(e, self.cfg.fidelity)
                if len(ms) >= 2:
                    out.confirmed.append(confirm(e.id, e.name, ms, base, self.objective, list(self.cfg.reeval_seeds)))
        return out


def _claimed_features(e: Entry) -> list[float]:
    """The same axes as an offline design's, for a free-form (LLM) entry: read from the properties it
    claimed, which the verifier tested, and from its CONFIG literal (read without running the code).
    What no claim reveals (a changed baseline, the length coefficient) stays at GRPO's value."""
    claims = set((e.proposal or {}).get("claims", []))
    cfg = json.loads(_config_literal(e.code or ""))
    num = lambda k, default: cfg[k] if isinstance(cfg.get(k), (int, float)) else default
    length = bool(claims & {"length_term_correct_only", "shorter_correct_preferred"})
    return [float("bernoulli_scale" in claims), float("bernoulli_scale" in claims),
            float("invalid_below_valid" in claims), float("all_fail_push_down" in claims), float(length),
            1.0 / 3.0 if length else 0.0, float(num("clip_high", 0.2) > 0.2),
            float(cfg.get("loss_agg", "token-mean") != "token-mean"), float(num("entropy_coef", 0.0) > 0), 0.0]


def _failure_reflection(e: Entry, reason: str) -> Reflection:
    """A candidate that failed in training is evidence too: its children should not repeat it."""
    head = reason.splitlines()[0][:300]
    return Reflection(
        findings=[Finding("failed", 1.0, head)], verdict="drop", worked=[], failed=[head],
        diagnosis=(f"{e.name} passed verification on synthetic batches but failed in real training: {head}. "
                   f"The mechanism ({(e.proposal or {}).get('mechanism', 'unknown')}) should not be reused as "
                   f"written; a child should change how it handles the case that broke."),
        suggestions=["revert"], summary=f"failed in training: {head[:120]}")
