"""A discovery run, read for people: the numbers behind `poise status`, `show`, `export` and `report`.

A `RunView` is one consistent snapshot of a run's archive, opened read-only, so it is safe while the
run is going. What it derives (each candidate's objective score on the search set, the Pareto front,
the confirmation results on fresh seeds, the budget spent) is the loop's own `RunState`. A missing or
corrupt run folder, or an unknown id, raises `RunError` with the fix in its message.
"""

from __future__ import annotations

import difflib
import json
import math
import shlex
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from poise.agents.llm import usage_by_role
from poise.discovery.archive import Archive, ArchiveError, Entry, Event
from poise.discovery.confirm import shares_random_numbers
from poise.discovery.objective import Objective, run_objective
from poise.discovery.state import Candidate, RunState
from poise.evaluation.metrics import CI

__all__ = ["Candidate", "RunError", "RunView", "pm"]


def pm(d: dict | None) -> str:
    """'mean ± 95% half-width (n=seeds)' of a CI dict; just the mean where the interval is undefined."""
    if not d:
        return ""
    return f"{CI(**d)} (n={d['n']})" if d["n"] >= 2 else str(CI(**d))


class RunError(ValueError):
    """A run folder or entry id that cannot be shown; the message names the problem and the fix."""


@dataclass
class RunView:
    root: Path
    config: dict
    objective: Objective
    candidates: list[Candidate]
    llm_calls: list[dict]
    events: list[Event]
    baseline_confirm: dict = field(default_factory=dict)  # GRPO's stats on the confirmation set (>= 2 seeds)
    confirm_seeds: list[int] = field(default_factory=list)  # the fresh seeds GRPO was re-evaluated on
    unjailed: dict = field(default_factory=dict)  # archive meta "unjailed": set when code ran without the jail
    writer: int | None = None  # pid of the process writing the archive now (-1: unknown pid), None: none is
    finished: bool = False  # the loop ended and wrote its summary
    name: str = ""  # the run's name: its folder, or the archive file's own name when it is not archive.db
    run: RunState = field(init=False, repr=False)  # what the loop derives from the same archive

    @property
    def unjailed_note(self) -> str:
        """The line every view shows for a run whose candidate code ran without the jail ("" otherwise)."""
        if not self.unjailed:
            return ""
        why = "--unsafe-no-jail was given" if self.unjailed.get("unsafe_no_jail") else "only poise's own code ran"
        return (f"candidate code in this run ran WITHOUT the jail (the jail could not start; {why}); its scores "
                f"rest on the hook process alone: {self.unjailed.get('warning', '')}")

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, run: Path | str, trajectories: bool = True) -> RunView:
        run = Path(run)
        if not run.exists():
            raise RunError(f"no archive at {run}: pass the folder of a `poise discover` run (it holds archive.db)")
        path = run if run.is_file() else run / "archive.db"
        if not path.exists():
            raise RunError(f"{run} is not a discovery run folder: it holds no archive.db. Pass the folder that "
                           f"`poise discover --out` wrote (default runs/discover-<time>)")
        try:
            a = Archive(path, readonly=True)
        except ArchiveError as e:
            raise RunError(f"{e}. The run folder is damaged or not a poise run") from None
        try:
            with a.snapshot():
                entries = a.entries(trajectories=trajectories)
                calls = a.llm_calls()
                events = a.events()
                config = json.loads(a.get_meta("config") or "{}")
                unjailed = json.loads(a.get_meta("unjailed") or "{}")
                finished = a.get_meta("finished")
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as e:
            raise RunError(f"{path} cannot be read ({type(e).__name__}: {e}); the archive is damaged. "
                           f"Finished evaluations may be recoverable with `sqlite3 {path} .recover`") from None
        finally:
            a.close()
        if not entries:
            raise RunError(f"{path} holds no entries yet: the run has not written its baseline. Wait for it, "
                           f"or start the run again")
        objective = run_objective(config)
        view = cls.build(path.parent, config, objective, entries, calls, events)
        view.unjailed = unjailed
        view.name = path.stem if path.name != "archive.db" else path.parent.resolve().name
        view.writer = Archive.writer_pid(path)
        # finished: the loop marked its end after the last thing it logged (a resumed run logs anew); an
        # archive from before that mark is finished when its budget is spent and nothing is in flight
        last = max((ev.ts for ev in events if not (ev.kind == "meta" and ev.payload.get("key") == "finished")),
                   default=0.0)
        b = view.budget()
        view.finished = (float(finished) >= last if finished else
                         b["in_flight"] == 0 and b["trained"] >= b["budget"] > 0
                         and _confirmed(events, int(config.get("reeval_top", 0) or 0)))
        return view

    def discovery_rule(self) -> str:
        """What a discovery needs in this run (the minimum effect its interval must clear); "" before any
        candidate was confirmed."""
        return next((c.confirmation.needs for c in self.candidates if c.confirmation and c.confirmation.needs), "")

    def period(self) -> tuple[float, float] | None:
        """When the run ran: its first and last archived event (epoch seconds); None for an empty log."""
        ts = [ev.ts for ev in self.events]
        return (min(ts), max(ts)) if ts else None

    def state(self) -> str:
        """What the run is doing: "running (pid N)", "finished", or "stopped: ..." with the command that
        continues it (a stopped run's in-flight candidates are trained again on resume)."""
        if self.writer is not None:
            return "running" + (f" (pid {self.writer})" if self.writer > 0 else "")
        if self.finished:
            return "finished"
        b = self.budget()
        n, more = b["unfinished"], b["budget"] - b["trained"] - b["unfinished"]
        # with nothing left to train, what a stopped run lacks is its end: the confirmation on fresh seeds
        then = (f" ({n} unfinished candidate(s) continue then)" if n else
                f" (the search continues then: {more} more candidate(s) to propose and train)" if more > 0 else
                " (its confirmation on fresh seeds continues then)")
        return f"stopped: resume with `poise discover --resume --out {shlex.quote(str(self.root))}`{then}"

    @classmethod
    def build(cls, root: Path, config: dict, objective: Objective, entries: list[Entry], calls: list[dict],
              events: list[Event]) -> RunView:
        promote = config.get("promote") or ""
        state = RunState.build(entries, objective, config.get("fidelity", "standard"),
                               int(config.get("budget", 0) or 0), promote=promote,
                               paired=shares_random_numbers(int(config.get("protocol", 1)), config.get("backend", "tiny")))
        view = cls(root, config, objective, state.candidates, calls, events, state.baseline_confirm,
                   state.confirm_seeds)
        view.run = state
        return view

    # -- lookups ------------------------------------------------------------------------------------
    @property
    def baseline(self) -> Candidate:
        return self.candidates[0]

    def get(self, entry_id: int) -> Candidate:
        for c in self.candidates:
            if c.id == entry_id:
                return c
        ids = [c.id for c in self.candidates]
        raise RunError(f"no candidate #{entry_id} in {self.root}: its ids are {ids[0]}..{ids[-1]} "
                       f"(see `poise status {self.root}`)")

    def parent(self, c: Candidate) -> Candidate | None:
        pid = c.entry.parent_id
        return self.get(pid) if pid is not None and any(x.id == pid for x in self.candidates) else None

    def lineage(self, c: Candidate) -> list[Candidate]:
        """The candidate, its parent, and so on up to the root."""
        out = [c]
        while (p := self.parent(out[-1])) is not None:
            out.append(p)
        return out

    def curves(self, c: Candidate) -> dict[str, list[list[dict]]]:
        """Its search-seed trajectories beside its parent's, labelled, for a plot ({} when not trained)."""
        mine = [v.trajectory for v in c.entry.search_evaluations() if v.trajectory]
        if not mine:
            return {}
        out = {f"#{c.id} {c.name}": mine}
        p = self.parent(c)
        theirs = [v.trajectory for v in p.entry.search_evaluations() if v.trajectory] if p else []
        if p is not None and theirs:
            out[f"parent #{p.id} {p.name}"] = theirs
        return out

    def code_diff(self, c: Candidate) -> list[str]:
        """Its code as a unified diff against its parent's ([] for the root or for unchanged code)."""
        p = self.parent(c)
        if p is None:
            return []
        return list(difflib.unified_diff(p.entry.code.splitlines(), c.entry.code.splitlines(), f"#{p.id} {p.name}",
                                         f"#{c.id} {c.name}", lineterm=""))

    def children(self, c: Candidate) -> list[Candidate]:
        return [x for x in self.candidates if x.entry.parent_id == c.id]

    def leaderboard(self) -> list[Candidate]:
        """Evaluated candidates, the baseline included, best objective score first."""
        return self.run.leaderboard()

    def pareto_front(self) -> list[Candidate]:
        return [c for c in self.leaderboard() if c.pareto]

    # -- what was spent -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return self.run.counts()

    def budget(self) -> dict:
        """Candidates trained against the budget, proposals against their cap, what a resume goes on
        with, and the cost so far (the budget rule is `RunState`'s)."""
        s = self.run
        train_s = sum(v.wall_s for c in self.candidates for v in c.entry.evaluations)
        agents = self.config.get("agents") or {}
        return {"budget": s.budget, "trained": s.trained(live=self.writer is not None), "proposals": s.proposals,
                "max_proposals": s.max_proposals, "in_flight": s.in_flight(), "unfinished": s.unfinished(),
                "train_s": train_s, "llm": self.llm_usage().get("total"),
                "llm_budget_tokens": agents.get("budget_tokens"), "llm_budget_usd": agents.get("budget_usd")}

    def agent_failures(self) -> list[Event]:
        """Agent steps that gave nothing usable (an LLM answer that did not parse twice, ...), oldest first."""
        return [ev for ev in self.events if ev.kind == "agent_failed"]

    def placements(self, entry_id: int | None = None) -> list[dict]:
        """Where each archived evaluation ran (of one entry, or all), oldest first: entry, seed, purpose,
        ran_on ("local", or "ray:IP/NODE") and the attempts lost on a cluster before it finished.
        Evaluations archived before poise recorded it say "local": only the local pool existed then."""
        return [{"entry": ev.entry_id, "seed": ev.payload.get("seed"), "purpose": ev.payload.get("purpose"),
                 "ran_on": ev.payload.get("ran_on", "local"), "attempts": ev.payload.get("attempts", [])}
                for ev in self.events if ev.kind == "evaluation" and entry_id in (None, ev.entry_id)]

    def llm_usage(self) -> dict[str, dict]:
        """LLM use per agent role and in "total" ({} when no LLM was used)."""
        return usage_by_role(self.llm_calls)

    def noise(self) -> float | None:
        """The baseline's seed-to-seed 95% half-width of Overall on the confirmation set: how far apart
        two single-seed search results may be by chance alone. None until the baseline was re-evaluated."""
        if not self.baseline_confirm:
            return None
        o = self.baseline_confirm["overall"]
        h = (o["hi"] - o["lo"]) / 2
        return h if math.isfinite(h) else None


def _confirmed(events: list, reeval_top: int) -> bool:
    """Whether an archive without the loop's end mark got through its confirmation: every fresh-seed
    evaluation it started has its result, and it has some when it was to confirm anything (a run stopped at the
    end of its search, or inside its confirmation, is not finished)."""
    started = {(ev.entry_id, ev.payload.get("seed")) for ev in events
               if ev.kind == "eval_start" and ev.payload.get("purpose") == "reeval"}
    done = {(ev.entry_id, ev.payload.get("seed")) for ev in events
            if ev.kind == "evaluation" and ev.payload.get("purpose") == "reeval"}
    return started <= done and (bool(done) or reeval_top == 0)

