"""The loop's four agent roles: one small interface each, played by the offline researcher or by an LLM.

    role         offline (agents/offline.py)            LLM (agents/llm_roles.py, prompts/<role>.md)
    proposer     mechanism operators scored by the      free-form proposals from the parent, the tiered
                 evidence                               references, their reflections and literature priors
    implementer  code from design fragments             writes the module; repairs from verifier errors
    verifier     none beyond the property tests         reads proposal and code, says whether the code
                                                        implements the stated math (after the tests pass)
    reflector    detectors + written diagnosis          writes the diagnosis from the curves (as numbers),
                                                        the metrics and the detectors' findings

Roles mix freely (an LLM proposer with the offline reflector, two different models, ...), with one
exception: the offline implementer writes code only for the offline proposer's designs. `Agents`
chooses each role's implementation once, from `AgentsConfig`; a new kind of proposer is one file with a
class that has the `Proposer` method, and one line in `Agents.__init__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from poise.agents import llm_roles, offline
from poise.agents.llm import LLM, Budget, LLMConfig, LLMError, ModelSpec, check_priced
from poise.agents.types import AgentFailure, Proposal, ProposalContext, Usage

__all__ = ["ROLES", "AgentFailure", "Agents", "AgentsConfig", "Implementer", "ProposalContext", "Proposer",
           "Reflector", "Reviewer", "Usage"]

ROLES = ("proposer", "implementer", "verifier", "reflector")


class Proposer(Protocol):
    label: str

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        """``ctx.n`` proposals from ``ctx.parent`` (fewer, or none, when it has nothing new)."""
        ...


class Implementer(Protocol):
    label: str

    def implement(self, proposal: Proposal, feedback: list[str] | None, *, entry_id: int, attempt: int,
                  parent_name: str, parent_code: str, previous_code: str = "") -> tuple[str, Proposal]:
        """The module's code (and the proposal, which a repair may revise); ``feedback`` holds the
        verifier's errors on ``previous_code`` from the attempt before."""
        ...


class Reviewer(Protocol):
    label: str

    def review(self, proposal: Proposal, code: str, checks: list[dict], *, entry_id: int,
               attempt: int) -> tuple[bool, list[str]] | None:
        """(the code implements the proposal's math, reasons), or None when this reviewer has no opinion."""
        ...


class Reflector(Protocol):
    label: str

    def reflect(self, base_reflection, proposal: dict, trajectories: list[list[dict]], metrics: list[dict],
                parent: dict | None, objective_text: str, *, entry_id: int, name: str):
        """The reflection on a trained candidate, given the detectors' (``base_reflection``)."""
        ...


@dataclass
class AgentsConfig:
    """Which model plays each role. ``llm`` is the default model for every role; ``roles`` overrides one
    role with another model spec or "offline". Empty: the offline researcher plays every role."""

    llm: str = ""
    roles: dict[str, str] = field(default_factory=dict)
    budget_tokens: int | None = None
    budget_usd: float | None = None
    price: tuple[float, float] | None = None
    timeout_s: float = 120.0
    max_tokens: int = 2048
    key_env: str | None = None
    max_retries: int = 4
    backoff_s: float = 2.0

    def spec_for(self, role: str) -> str:
        s = self.roles.get(role, self.llm) or "offline"
        return "offline" if s in ("offline", "none", "") else s

    def validate(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"--role {sorted(unknown)[0]}=...: unknown role {sorted(unknown)[0]!r}; the roles are "
                             f"{', '.join(ROLES)}")
        for role in ROLES:
            s = self.spec_for(role)
            if s == "offline":
                continue
            spec = ModelSpec.parse(s, self.key_env)
            try:
                spec.api_key()  # a missing key is found now, not after the baseline has trained
            except LLMError as e:
                raise ValueError(str(e)) from None
            check_priced(spec, self.price, self.budget_usd)
        if self.spec_for("proposer") != "offline" and self.spec_for("implementer") == "offline":
            raise ValueError("an LLM proposer needs an LLM implementer: the offline implementer writes code only for "
                             "the offline proposer's designs (set --llm, or --role implementer=MODEL)")

    @property
    def uses_llm(self) -> bool:
        return any(self.spec_for(r) != "offline" for r in ROLES)


class Agents:
    """The roles for one run, each chosen once. ``usage`` accumulates LLM use until ``take_usage()``
    (the loop books it per candidate); ``llms`` names the model behind each role (None: offline)."""

    def __init__(self, cfg: AgentsConfig | None = None, ledger=None, on_retry: Callable[[str], None] | None = None):
        self.cfg = cfg or AgentsConfig()
        self.cfg.validate()
        spent = ledger.llm_spent() if ledger is not None and hasattr(ledger, "llm_spent") else (0, 0.0)
        self.budget = Budget(self.cfg.budget_tokens, self.cfg.budget_usd, spent[0], spent[1])
        llm_cfg = LLMConfig(timeout_s=self.cfg.timeout_s, max_tokens=self.cfg.max_tokens, price=self.cfg.price,
                            max_retries=self.cfg.max_retries, backoff_s=self.cfg.backoff_s)
        models: dict[str, LLM] = {}
        self.llms: dict[str, LLM | None] = {}
        for role in ROLES:
            s = self.cfg.spec_for(role)
            if s == "offline":
                self.llms[role] = None
                continue
            if s not in models:  # one client (and one shared budget) per model
                models[s] = LLM(ModelSpec.parse(s, self.cfg.key_env), llm_cfg, self.budget, ledger, on_retry)
            self.llms[role] = models[s]
        self.usage = Usage()

        def pick(role: str, offline_role, llm_role):
            llm = self.llms[role]
            return offline_role() if llm is None else llm_role(llm, self.usage)

        self.proposer: Proposer = pick("proposer", offline.OfflineProposer, llm_roles.LLMProposer)
        self.implementer: Implementer = pick("implementer", offline.OfflineImplementer, llm_roles.LLMImplementer)
        self.reviewer: Reviewer = pick("verifier", offline.OfflineReviewer, llm_roles.LLMReviewer)
        self.reflector: Reflector = pick("reflector", offline.OfflineReflector, llm_roles.LLMReflector)

    def describe(self) -> str:
        return ", ".join(f"{r}: {llm.spec.label if (llm := self.llms[r]) else 'offline'}" for r in ROLES)

    def take_usage(self) -> Usage:
        return self.usage.take()

    def charge(self, ledger, entry_id: int) -> None:
        """Book the LLM use since the last booking on the entry's cost (``ledger``: the archive)."""
        usage = self.take_usage()
        if usage.calls or usage.tokens or usage.seconds:
            ledger.add_cost(entry_id, **usage.as_cost())

    # the roles, as the loop and the tests call them
    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        return self.proposer.propose(ctx)

    def implement(self, proposal: Proposal, feedback: list[str] | None, **kw) -> tuple[str, Proposal]:
        return self.implementer.implement(proposal, feedback, **kw)

    def review(self, proposal: Proposal, code: str, checks: list[dict], **kw) -> tuple[bool, list[str]] | None:
        return self.reviewer.review(proposal, code, checks, **kw)

    def reflect(self, base_reflection, *args, **kw):
        return self.reflector.reflect(base_reflection, *args, **kw)
