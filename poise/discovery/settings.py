"""A discovery run's settings, and what a resumed run may change: the settings that cannot make a run
incoherent (its budget, workers, time limits, agents, more fresh seeds, ...) change when the user names
them, with the change recorded; any other named change is refused with the way to make it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from poise.agents.roles import Agents, AgentsConfig
from poise.backends import BackendSpec, get_backend
from poise.discovery.archive import Archive, ArchiveError
from poise.discovery.confirm import shares_random_numbers
from poise.discovery.objective import MIN_EFFECT, Objective, accuracy_tolerance, run_objective, stored_min_effect
from poise.evaluation.fidelity import PROTOCOL
from poise.isolation.hook import Isolation, choose_isolation


@dataclass
class DiscoverConfig:
    budget: int = 8
    directive: str = ""
    workers: int = 1
    fidelity: str = "standard"  # the tiny sandbox's size; with another backend, its name (the evaluations' label)
    backend: str = "tiny"  # tiny | trl (poise.backends)
    backend_config: dict | None = None  # the backend config file's contents (trl), recorded with the run
    # the cascade: after the search, the best `promote_top` and GRPO are trained again on this backend (the
    # real model), on the confirmation seeds; "" = no promotion
    promote: str = ""
    promote_config: dict | None = None
    promote_top: int = 2
    strategy: str = "lineage"  # lineage | greedy | random | tournament
    search_seed: int = 0  # seeds parent selection and the proposer's exploration
    eval_seed: int = 0  # the training seed of every search evaluation
    proposals_per_round: int = 2
    max_attempts: int = 3  # implement -> verify rounds before a proposal is rejected
    reeval_top: int = 2
    # fresh seeds, never used by the search; 5 and objective.MIN_EFFECT were chosen together on measured power
    reeval_seeds: tuple[int, ...] = (1001, 1002, 1003, 1004, 1005)
    # racing: a candidate about to lead the search or become a parent twice is first trained on this many
    # search seeds (eval_seed, eval_seed+1, ...; see selection.to_race); 1 turns racing off
    race_seeds: int = 3
    eval_timeout_s: float | None = None  # per evaluation; None: 10x the fidelity's expected time
    verify_timeout_s: float = 30.0  # per verification (synthetic batches take about a second)
    threads: int | None = None  # torch threads per worker; None: cores // workers
    agents: AgentsConfig = field(default_factory=AgentsConfig)  # who plays each role (LLMs or offline)
    # run candidate code that poise did not write without the jail, where the jail cannot start (recorded)
    unsafe_no_jail: bool = False
    # the smallest confirmed change that counts as a discovery, per metric ({} = objective.MIN_EFFECT; a run
    # records all of them when it starts, so its verdicts never move with a new default)
    min_effect: dict[str, float] = field(default_factory=dict)
    # points of accuracy a concise candidate may lose in the search's ranking (None = objective.accuracy_tolerance
    # of rank_on; a run records it when it starts, and one stored before that reads the former 2 points)
    accuracy_tolerance: float | None = None
    # the accuracy metric selection, racing and the verdict rank on: "overall" (the paper's) or overall@k
    # (objective.Objective.accuracy); `poise discover` gives the sandbox objective.SANDBOX_RANK_ON
    rank_on: str = "overall"
    # the evaluation protocol the run was started on (evaluation.fidelity.PROTOCOL): from 2 on, arms share their
    # random numbers at a seed and comparisons on matched seeds are paired
    protocol: int = PROTOCOL

    @property
    def paired(self) -> bool:
        """Whether the run's comparisons on matched seeds are paired (`confirm.shares_random_numbers`)."""
        return shares_random_numbers(self.protocol, self.backend)

    @property
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(self.backend, self.fidelity, self.backend_config)

    @property
    def promote_spec(self) -> BackendSpec | None:
        return BackendSpec(self.promote, self.promote, self.promote_config) if self.promote else None

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
        d.setdefault("rank_on", "overall")  # nor ranked on anything but the paper's Overall
        d.setdefault("protocol", 1)  # nor shared their random numbers
        if isinstance(d.get("agents"), dict):
            a = {k: v for k, v in d["agents"].items() if k in {f.name for f in dataclasses.fields(AgentsConfig)}}
            if a.get("price") is not None:
                a["price"] = tuple(a["price"])
            d["agents"] = AgentsConfig(**a)
        return cls(**d)


# the settings a resumed run may change when the user names them; every other one must stay as stored
# (the re-evaluation's fresh seeds may only be extended)
_CHANGEABLE = ("budget", "workers", "threads", "eval_timeout_s", "verify_timeout_s", "reeval_top", "reeval_seeds",
               "agents", "unsafe_no_jail", "min_effect", "promote", "promote_config", "promote_top")


def _show(value, key: str) -> str:
    if key == "reeval_seeds":
        return f"{len(value)} ({', '.join(map(str, value))})" if value else "0"
    if key in ("backend_config", "promote_config"):
        return f"a config with digest {BackendSpec('x', 'x', value).digest()}" if value else "none"
    if key == "agents":
        who = value.llm or ", ".join(f"{r}={m}" for r, m in value.roles.items()) or "offline"
        return f"({who}, LLM budget {value.budget_tokens or 'none'} tokens / ${value.budget_usd or 'none'})"
    return "default" if value is None else str(value)


def resolve(archive: Archive, root: Path, cfg: DiscoverConfig, resume: bool,
            given: frozenset[str] | None) -> tuple[DiscoverConfig, list[str]]:
    """The run's settings, and the changes a resume made to them. A resumed run keeps every stored one
    except those in ``given`` (the settings the user named, e.g. on the command line; None: every field
    of ``cfg``); of those, only the ones that cannot make the run incoherent may change, and each change
    is listed."""
    changes: list[str] = []
    stored = archive.get_meta("config")
    if stored is None:  # a new run records every minimum effect it will be judged by, not only those named
        tol = accuracy_tolerance(cfg.rank_on) if cfg.accuracy_tolerance is None else cfg.accuracy_tolerance
        return dataclasses.replace(cfg, min_effect={**MIN_EFFECT, **cfg.min_effect}, accuracy_tolerance=tol), changes
    if not resume:
        raise ArchiveError(f"{root} already holds a discovery run; pass --resume to continue it, "
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
        if now == was or (k == "accuracy_tolerance" and now is None):  # None: the run's own, as stored
            continue
        flag = "--" + k.replace("_", "-").replace("search-seed", "seed")
        if k == "reeval_seeds" and len(now) < len(was):
            raise ArchiveError(f"--reeval-seeds {len(now)}: the run being resumed re-evaluates on {len(was)} "
                               f"fresh seeds; it can extend them (a larger number), not drop any")
        if k == "reeval_seeds" and tuple(now[:len(was)]) != tuple(was):
            raise ArchiveError(f"the fresh seeds {list(now)} do not extend the stored {list(was)}")
        if k in ("promote", "promote_config") and old.promote:  # a cascade added to a run, never swapped
            raise ArchiveError(f"{flag} differs from the run being resumed ({_show(now, k)} vs {_show(was, k)}); its "
                               f"promoted results would not compare with new ones: start a new run (another --out)")
        if k == "budget" and now < (done := _finished(archive)):
            raise ArchiveError(f"--budget {now}: the run being resumed has already trained {done} "
                               f"candidates; give at least that many")
        if k not in _CHANGEABLE:
            raise ArchiveError(f"{flag} differs from the run being resumed ({_show(now, k)} vs {_show(was, k)}); a "
                               f"resumed run keeps its settings, start a new run (another --out) to change it")
        if k == "min_effect":  # a named metric changes, the others stay as stored (or as the run's time defaulted)
            was = stored_min_effect(was)
            now = {**was, **now}
            if now == was:
                continue
        new = dataclasses.replace(new, **{k: now})
        changes.append(f"{k.replace('_', ' ')} {_show(was, k)} -> {_show(now, k)}")
    cut = stored_min_effect(new.min_effect)["overall"]
    if "reeval_seeds" in given and new.reeval_seeds != old.reeval_seeds and cut != MIN_EFFECT["overall"]:
        shipped = f"--min-effect overall={MIN_EFFECT['overall']:g} with {len(DiscoverConfig().reeval_seeds)} fresh seeds"
        changes.append(f"(the run keeps its minimum effect, overall={cut:g}; {shipped} is the rule measured in "
                       f"docs/benchmarks.md §16)")
    return new, changes


def _finished(archive: Archive) -> int:
    """Candidates whose training has ended (the budget cannot drop below them)."""
    return sum(1 for e in archive.entries(trajectories=False) if e.id != 0 and e.status in ("evaluated", "failed"))


def check_sandbox(archive: Archive, root: Path, spec: BackendSpec | str) -> str:
    """The fingerprint of the backend (the tiny sandbox at a fidelity, or a real model's configuration); a
    run evaluated on another version of it is refused (its numbers would not compare with new ones)."""
    if isinstance(spec, str):
        spec = BackendSpec("tiny", spec)
    sandbox = get_backend(spec).fingerprint()
    stored = archive.get_meta("sandbox")
    if stored is not None and stored != sandbox:
        what = f"the {spec.fidelity!r} sandbox" if spec.name == "tiny" else f"the {spec.name} backend's setup"
        raise ArchiveError(f"{root} was evaluated on another version of {what} "
                           f"(fingerprint {stored}, this poise has {sandbox}): its numbers would not compare "
                           f"with new ones. Start a new run with another --out folder, or resume it with "
                           f"the poise version that made it")
    return sandbox


def check_promotion(archive: Archive, root: Path, spec: BackendSpec | None) -> str | None:
    """The promotion backend's fingerprint; refused when the run's promoted results came from another."""
    if spec is None:
        return None
    if spec.name == "tiny":
        raise ArchiveError("--promote tiny: the cascade promotes to a real model; use --promote trl")
    fp = get_backend(spec).fingerprint()
    stored = archive.get_meta("promote_sandbox")
    if stored is not None and stored != fp:
        raise ArchiveError(f"{root}'s promoted results came from another {spec.name} setup (fingerprint {stored}, "
                           f"now {fp}); start a new run with another --out folder")
    return fp


@dataclass
class Run:
    """A run opened for the loop: its settings, the changes a resume made, and what they decide."""

    cfg: DiscoverConfig
    changes: list[str]
    objective: Objective
    agents: Agents
    isolation: Isolation


def open_run(archive: Archive, root: Path, cfg: DiscoverConfig, resume: bool, given: frozenset[str] | None,
             say: Callable[[str], None]) -> Run:
    """Check everything a run needs before anything of this invocation is written to the archive (a bad
    directive or minimum effect, agents that cannot work together, a missing API key, a jail that cannot
    start, a retuned sandbox), then record the settings."""
    cfg, changes = resolve(archive, root, cfg, resume, given)
    if cfg.promote and cfg.promote == cfg.backend:
        raise ArchiveError(f"--promote {cfg.promote}: this run already trains on {cfg.backend}; the cascade promotes "
                           f"from the cheap backend to another (e.g. --backend tiny --promote trl)")
    if cfg.promote and not cfg.reeval_seeds:
        raise ArchiveError("--promote trains the best again on the fresh seeds of --reeval-seeds, and there are none: "
                           "give --reeval-seeds 1 or more")
    objective = run_objective(cfg.to_dict())
    agents = Agents(cfg.agents, ledger=archive, on_retry=say)
    # an LLM implementer writes code poise did not: it runs only in the jail (or, explicitly, unsafely)
    isolation = choose_isolation(agents.llms["implementer"] is None, cfg.unsafe_no_jail)
    sandbox = check_sandbox(archive, root, cfg.backend_spec)
    promoted = check_promotion(archive, root, cfg.promote_spec)
    archive.set_meta("config", json.dumps(cfg.to_dict()))
    archive.set_meta("sandbox", sandbox)
    if promoted:
        archive.set_meta("promote_sandbox", promoted)
    if changes:
        archive.log("resume_settings", None, changes=changes)
    if not isolation.jailed:  # kept for good: a run that once ran without the jail says so in every view
        say(isolation.warning)
        archive.set_meta("unjailed", json.dumps({"unsafe_no_jail": cfg.unsafe_no_jail, "warning": isolation.warning}))
    return Run(cfg, changes, objective, agents, isolation)
