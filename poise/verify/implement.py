"""The implement -> verify phase of the loop: the implementer writes a proposal's code, the verifier
tests it in the hook process (and, when an LLM plays the verifier, reviews it against the stated math),
and the verifier's errors go back to the implementer, up to ``max_attempts`` times. Code that passes is
still rejected when it is a duplicate: the same code, or the same behaviour on the probe batches, as
an entry already in the archive (it would be trained twice for one result)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from poise.agents.llm import BudgetExhausted
from poise.agents.offline import GRPO, baseline_proposal
from poise.agents.roles import Agents
from poise.agents.types import AgentFailure, Proposal
from poise.algorithms import builtin_source
from poise.algorithms.base import FIXED_BUDGET
from poise.discovery.archive import Archive, Entry, code_hash
from poise.isolation.process import Limits
from poise.verify.static import config_literal
from poise.verify.verifier import VerificationReport, verify

# what `implement_and_verify` says happened to the entry
VERIFIED, REJECTED, OUT_OF_BUDGET = "verified", "rejected", "out_of_budget"


def behaviour_key(report: VerificationReport, code: str) -> str:
    """What two candidates share when they behave alike: their outputs on the probe batches and their
    CONFIG literal."""
    return report.behaviour + "|" + config_literal(code)


@dataclass
class Implementation:
    archive: Archive
    agents: Agents
    limits: Limits
    jailed: bool
    max_attempts: int = 3
    say: Callable[[str], None] = lambda text: None

    def __call__(self, e: Entry) -> str:
        """Implement and verify a proposed entry; VERIFIED when it is ready to train, REJECTED (archived
        with the reason), or OUT_OF_BUDGET (the LLM budget ran out: it stays proposed, so a resumed run
        with more budget picks it up)."""
        archive, agents = self.archive, self.agents
        proposal = Proposal.from_dict(e.proposal)
        feedback: list[str] | None = None
        attempts: list[dict] = []
        parent = archive.get(e.parent_ids[0], trajectories=False) if e.parent_ids else archive.get(0)
        code, report = "", None
        llm = agents.llms["implementer"]
        try:
            for attempt in range(1, self.max_attempts + 1):
                if llm is not None:  # LLM calls can take minutes: say what is happening
                    self.say(f"#{e.id} {e.name}: implementing with {llm.spec.label}"
                             + (f" (attempt {attempt}, with the verifier's errors)" if attempt > 1 else ""))
                try:
                    code, proposal = agents.implement(proposal, feedback, entry_id=e.id, attempt=attempt,
                                                      parent_name=parent.name, parent_code=parent.code,
                                                      previous_code=code)
                except AgentFailure as f:
                    attempts.append({"attempt": attempt, "ok": False, "stage": "implement", "errors": [f.reason],
                                     "wall_s": 0.0, "answer": f.answer[:4000]})
                    feedback = [f.reason]
                    continue
                report = verify(code, e.name, proposal.claims, self.limits, jailed=self.jailed)
                if report.ok and report.config.get("dynamic_sampling"):
                    report.ok, report.stage, report.errors = False, "budget", [FIXED_BUDGET]
                if report.ok:
                    self._review(report, proposal, code, e.id, attempt)
                attempts.append({"attempt": attempt, "ok": report.ok, "stage": report.stage, "errors": report.errors,
                                 "wall_s": report.wall_s})
                if report.ok:
                    break
                feedback = report.errors
        except BudgetExhausted as b:
            agents.charge(archive, e.id)
            archive.log("llm_budget", e.id, reason=str(b), attempts=attempts)
            self.say(f"#{e.id} {e.name}: {b}; left as proposed")
            return OUT_OF_BUDGET
        agents.charge(archive, e.id)
        archive.add_cost(e.id, verify_s=sum(a["wall_s"] for a in attempts), attempts=len(attempts))
        if attempts[-1]["stage"] == "implement":  # the last attempt produced no code to verify
            report = VerificationReport(ok=False, stage="implement", errors=attempts[-1]["errors"])
        assert report is not None
        if code:
            archive.set_code(e.id, code, proposal.to_dict())
        archive.set_verification(e.id, {**report.to_dict(), "attempts": attempts})
        if not report.ok:
            archive.set_status(e.id, "rejected", f"verification failed after {len(attempts)} attempt(s): "
                                                 + "; ".join(report.errors)[:500])
            self.say(f"#{e.id} {e.name} rejected: {report.errors[0] if report.errors else report.stage}")
            return REJECTED
        return self._unless_duplicate(e, code, behaviour_key(report, code))

    def add_baseline(self, directive: str) -> None:
        """The archive's root entry, GRPO, verified like every candidate: the report documents it, and its
        behaviour hash lets the loop recognise a proposal that is GRPO in disguise."""
        code = builtin_source("grpo")
        eid = self.archive.add_entry("GRPO", code, baseline_proposal(), [], 0, directive, status="evaluating")
        assert eid == 0
        report = verify(code, "GRPO", GRPO.claims(), self.limits, jailed=self.jailed)
        self.archive.set_verification(eid, report.to_dict())
        if report.ok:
            self.archive.set_behaviour(eid, behaviour_key(report, code))
        self.archive.log("baseline", eid)

    def _review(self, report: VerificationReport, proposal: Proposal, code: str, entry_id: int,
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

    def _unless_duplicate(self, e: Entry, code: str, behaviour: str) -> str:
        archive = self.archive
        twin = archive.find_code(code_hash(code))
        if twin is not None and twin.id != e.id:
            archive.set_status(e.id, "rejected", f"same code as #{twin.id} {twin.name}")
            return REJECTED
        twin = archive.find_behaviour(behaviour)
        if twin is not None and twin.id != e.id:
            archive.set_status(e.id, "rejected", f"behaves exactly like #{twin.id} {twin.name} on the probe "
                                                 f"batches; not evaluated twice")
            self.say(f"#{e.id} {e.name} is a duplicate of #{twin.id} {twin.name}")
            return REJECTED
        archive.set_behaviour(e.id, behaviour)
        archive.set_status(e.id, "verified")
        return VERIFIED
