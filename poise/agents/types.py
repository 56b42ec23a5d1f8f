"""What the agent roles exchange with the loop: the proposer's view of an archive entry, a proposal,
the context a proposer is given, the LLM use a role booked, and the failure of a role. Shared by every
implementation of every role (offline, LLM, or one you add), so none of them owns these types."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poise.agents.offline import Design


class AgentFailure(RuntimeError):
    """A role gave no usable answer; ``answer`` is the last raw text (for the record)."""

    def __init__(self, role: str, reason: str, answer: str = ""):
        super().__init__(f"{role}: {reason}")
        self.role, self.reason, self.answer = role, reason, answer


@dataclass
class ArchiveNode:
    """What the proposer reads about an archive entry (the loop builds these from the archive)."""

    id: int
    name: str
    design: Design | None  # None when the entry was not written by the offline proposer
    status: str  # evaluated | failed | rejected | ...
    score: float | None  # the objective's scalar (None when not evaluated)
    parent_id: int | None = None
    operator: str = ""  # the change that created it
    suggestions: list[str] = field(default_factory=list)  # from its reflection
    diagnosis: str = ""
    metrics: dict = field(default_factory=dict)
    mechanism: str = ""  # the proposal's one-line mechanism (what an LLM proposer reads)
    ideas: list[str] = field(default_factory=list)  # an LLM reflector's free-text suggestions


@dataclass
class Proposal:
    name: str
    hypothesis: str
    mechanism: str
    math: str
    expected_dynamics: str
    claims: list[str]
    hooks: list[str]
    builds_on: list[int]
    operator: str
    design: dict
    rationale: str
    author: str = "offline"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Proposal:
        """From an archived proposal (fields this version does not know are left out)."""
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass
class ProposalContext:
    """What the proposer sees; `discovery/propose.py` builds it from the archive."""

    parent: ArchiveNode
    parent_code: str
    parent_math: str
    nodes: list[ArchiveNode]  # the whole archive, for evidence and for "do not repeat"
    references: list[tuple[str, ArchiveNode]]  # (tier, node): pareto | complementary | exploratory
    objective_text: str
    objective_weights: dict[str, float]
    baseline_metrics: dict
    n: int
    round: int
    rng: Any = None


@dataclass
class Usage:
    """LLM use booked since the last `take` (the loop books it on the entry it was for)."""

    calls: int = 0
    tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0

    def add(self, reply) -> None:
        self.calls += 0 if reply.cached else 1
        self.tokens += reply.tokens_in + reply.tokens_out
        self.usd += reply.cost_usd or 0.0
        self.seconds += reply.latency_s

    def take(self) -> Usage:
        """What was booked so far, and start again from zero (the roles share one `Usage`)."""
        out = dataclasses.replace(self)
        self.calls, self.tokens, self.usd, self.seconds = 0, 0, 0.0, 0.0
        return out

    def as_cost(self) -> dict[str, float]:
        return {"llm_calls": self.calls, "llm_tokens": self.tokens, "llm_usd": round(self.usd, 6),
                "llm_s": round(self.seconds, 3)}
