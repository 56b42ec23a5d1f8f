"""A run's state, derived once from one snapshot of its archive: what the loop decides on and what
`poise status`, `show`, `export` and `report` show, so the two can never disagree.

For each entry: its mean search metrics, its objective score against the baseline (evaluated entries
only), whether it is on the Pareto front, and its confirmation on fresh seeds against the baseline's.
For the run: the budget rule, in one place:

- a candidate counts against the budget once its training has ended (evaluated, or failed in
  training) and, while a process is running the loop, while it trains;
- a stopped run's candidate that was training is trained again on resume, so it does not count yet;
  a resume goes on with it always, and with proposed or verified candidates while the budget has room;
- at most ``3 * budget`` proposals are made in all (rejected ones cost no training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from poise.discovery.archive import IN_FLIGHT, Archive, Entry
from poise.discovery.confirm import Discovery, confirm, confirm_evaluations, search_means, search_per_seed, stats
from poise.discovery.objective import Objective
from poise.discovery.selection import pareto_ranks

PROPOSALS_PER_BUDGET = 3  # the proposal cap, per candidate of budget


@dataclass
class Candidate:
    """One archive entry with what is derived from it."""

    entry: Entry
    search: dict  # mean over its search seeds of overall, hard_pass1, length, validity ({} before any)
    score: float | None  # the objective's scalar on the search set; None unless evaluated
    pareto: bool = False  # on the first Pareto front of the evaluated entries
    confirmation: Discovery | None = None  # re-evaluated on fresh seeds, against the baseline
    promoted: dict = field(default_factory=dict)  # its stats on the promotion backend (the real model), if promoted

    @property
    def id(self) -> int:
        return self.entry.id

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def status(self) -> str:
        return self.entry.status


@dataclass
class RunState:
    objective: Objective
    fidelity: str
    budget: int
    candidates: list[Candidate]  # in id order; the baseline (GRPO) first
    baseline_confirm: dict = field(default_factory=dict)  # GRPO's stats on the confirmation set (>= 2 seeds)
    confirm_seeds: list[int] = field(default_factory=list)  # the fresh seeds GRPO was re-evaluated on
    promote: str = ""  # the label of the backend the best were promoted to ("" = none)

    @classmethod
    def read(cls, archive: Archive, objective: Objective, fidelity: str, budget: int,
             trajectories: bool = False, promote: str = "", paired: bool = True) -> RunState:
        with archive.snapshot():
            entries = archive.entries(trajectories=trajectories)
        return cls.build(entries, objective, fidelity, budget, promote, paired)

    @classmethod
    def build(cls, entries: list[Entry], objective: Objective, fidelity: str, budget: int,
              promote: str = "", paired: bool = True) -> RunState:
        """``paired``: the run's arms share their random numbers at a seed (evaluation protocol 2 and later), so
        its comparisons on matched seeds are paired; a run of protocol 1 keeps the Welch intervals it reported."""
        bm = search_means(entries[0]) if entries else {}
        base = search_per_seed(entries[0]) if entries and paired else None  # the baseline's own means stay raw
        cands = []
        for e in entries:
            m = search_means(e, base if e is not entries[0] else None)
            score = objective.scalar(m, bm) if e.status == "evaluated" and m and bm else None
            cands.append(Candidate(e, m, score))
        scored = [c for c in cands if c.score is not None]
        for c, r in zip(scored, pareto_ranks([objective.vector(c.search) for c in scored])):
            c.pareto = r == 1
        state = cls(objective, fidelity, budget, cands, promote=promote)
        if promote:
            for c in cands:
                evs = confirm_evaluations(c.entry, promote)
                if evs:
                    c.promoted = stats([v.metrics for v in evs])
        be = confirm_evaluations(entries[0], fidelity) if entries else []
        state.confirm_seeds = [v.seed for v in be]
        if len(be) >= 2:
            bc = [v.metrics for v in be]
            state.baseline_confirm = stats(bc)
            for c in cands[1:]:
                evs = confirm_evaluations(c.entry, fidelity)
                if len(evs) >= 2:
                    c.confirmation = confirm(c.id, c.name, [v.metrics for v in evs], bc, objective,
                                             [v.seed for v in evs], state.confirm_seeds if paired else None)
        return state

    def rank_agreement(self) -> dict | None:
        """How well the cheap backend's ranking (search Overall, what selected them) predicted the promoted
        one (Overall on the real model, fresh seeds): Spearman's rho over the promoted entries, with a 95%
        interval from Fisher's z (Bonett-Wright standard error; none below 4 entries or at |rho| = 1)."""
        from scipy import stats as st

        pairs = [(c.search["overall"], c.promoted["overall"]["mean"]) for c in self.candidates
                 if c.promoted and c.search]
        n = len(pairs)
        if n < 2:
            return None
        rho = float(st.spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
        if math.isfinite(rho) and abs(abs(rho) - 1) < 1e-9:
            rho = math.copysign(1.0, rho)  # rank agreement is exact; keep its float rounding out of the interval
        lo = hi = math.nan
        if n >= 4 and math.isfinite(rho) and abs(rho) < 1:
            z, se = math.atanh(rho), math.sqrt((1 + rho ** 2 / 2) / (n - 3))
            q = float(st.norm.ppf(0.975))
            lo, hi = math.tanh(z - q * se), math.tanh(z + q * se)
        return {"rho": rho, "lo": lo, "hi": hi, "n": n}

    # -- lookups ------------------------------------------------------------------------------------
    @property
    def baseline(self) -> Candidate:
        return self.candidates[0]

    def find(self, entry_id: int) -> Candidate | None:
        return next((c for c in self.candidates if c.id == entry_id), None)

    def leaderboard(self) -> list[Candidate]:
        """Evaluated candidates, the baseline included, best objective score first."""
        scored = [(c.score, c) for c in self.candidates if c.score is not None]
        return [c for _, c in sorted(scored, key=lambda t: (-t[0], t[1].id))]

    def top(self, k: int) -> list[Candidate]:
        """The best ``k`` candidates by the objective on the search set, the baseline left out."""
        return [c for c in self.leaderboard() if c.id != 0][:k]

    # -- the budget rule ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Candidates (the baseline left out) by status."""
        out: dict[str, int] = {}
        for c in self.candidates[1:]:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def finished(self) -> int:
        """Candidates whose training has ended (evaluated, or failed in training)."""
        n = self.counts()
        return n.get("evaluated", 0) + n.get("failed", 0)

    def trained(self, live: bool) -> int:
        """Candidates that count against the budget; ``live``: a process is running the loop, so the
        ones training now count too (a stopped run trains them again on resume)."""
        return self.finished() + (self.counts().get("evaluating", 0) if live else 0)

    def unfinished(self) -> int:
        """What a resume goes on with: a candidate that was training always, proposed and verified ones
        only while the budget has room."""
        n = self.counts()
        training = n.get("evaluating", 0)
        room = max(0, self.budget - self.finished() - training)
        return training + min(n.get("proposed", 0) + n.get("verified", 0), room)

    def in_flight(self) -> int:
        n = self.counts()
        return sum(n.get(s, 0) for s in IN_FLIGHT)

    @property
    def proposals(self) -> int:
        return len(self.candidates) - 1

    @property
    def max_proposals(self) -> int:
        return PROPOSALS_PER_BUDGET * self.budget
