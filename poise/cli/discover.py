"""`poise discover`: the discovery loop, with its progress bars and its final tables."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from poise.cli import common
from poise.discovery.events import Events
from poise.isolation.text import printable


@common.app.command("discover")
def discover_cmd(
    ctx: typer.Context,
    budget: int = typer.Option(8, "--budget", "-b", min=1, help="candidates to train (verification rejects do not count)"),
    directive: str = typer.Option("", "--directive", "-d", help='what to look for, e.g. "accurate and concise"'),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="evaluations run in parallel (separate processes)"),
    executor: str = typer.Option("local", "--executor", help="where evaluations run: local (processes on this machine) "
                                 "| ray (tasks on a Ray cluster; see --ray-address)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="with --executor ray: auto (the cluster this "
                                              "machine is part of) or HOST:PORT; default: start a Ray here for the run"),
    cpus_per_eval: Optional[float] = typer.Option(None, "--cpus-per-eval", help="with --executor ray: CPUs each "
                                                  "evaluation reserves (default: --threads)"),
    gpus_per_eval: float = typer.Option(0.0, "--gpus-per-eval", help="with --executor ray: GPUs each evaluation "
                                        "reserves (default 0)"),
    fidelity: str = typer.Option("standard", "--fidelity", "-f", help="smoke | standard | full (the tiny backend)"),
    backend: str = typer.Option("tiny", "--backend", help="what trains a candidate: tiny (the embedded sandbox) | trl "
                                "(a Hugging Face model with TRL; extra [trl]) "
                                "| verl (your verl recipe with the candidate as its plugin; GPUs)"),
    backend_config: Optional[Path] = typer.Option(None, "--backend-config", help="the backend's TOML file: model, data, "
                                                  "benchmarks and weights, generation, trainer (see README)"),
    promote: str = typer.Option("", "--promote", help="the cascade: after the search, train the best (and GRPO) again "
                                "on this backend (trl: a real model) on the confirmation seeds"),
    promote_config: Optional[Path] = typer.Option(None, "--promote-config", help="the promotion backend's TOML file"),
    promote_top: int = typer.Option(2, "--promote-top", min=1, help="how many of the best candidates to promote"),
    strategy: str = typer.Option("lineage", "--strategy", help="parent selection: lineage | greedy | random | tournament"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default: runs/discover-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out (or the latest one under runs/)"),
    seed: int = typer.Option(0, "--seed", help="search seed (parent selection and proposal exploration)"),
    reeval_seeds: int = typer.Option(5, "--reeval-seeds", min=0, help="fresh seeds for re-evaluating the best candidates "
                                     "(5: what the confirmation's measured power needs, docs/benchmarks.md §16)"),
    reeval_top: int = typer.Option(2, "--reeval-top", min=0, help="how many of the best candidates to re-evaluate"),
    race_seeds: int = typer.Option(3, "--race-seeds", min=1, help="search seeds a candidate gets before it may lead the "
                                   "search or be a parent twice (racing; 1 = off)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="torch threads per worker (default: cores / workers)"),
    confirm: list[int] = typer.Option([], "--confirm",
                                      help="also re-evaluate this archive entry id (repeatable; with --resume)"),
    llm: str = typer.Option("", "--llm", help="LLM for every agent role: [provider:]model[@base_url], e.g. "
                            "openai:gpt-4.1-mini, anthropic:claude-sonnet-4-5, openai:MODEL@http://localhost:8000/v1"),
    role: list[str] = typer.Option([], "--role", help="one role's agent: ROLE=MODEL or ROLE=offline; roles: proposer, "
                                   "implementer, verifier, reflector (repeatable)"),
    llm_budget_tokens: Optional[int] = typer.Option(None, "--llm-budget-tokens", min=1,
                                                    help="stop LLM calls after this many tokens (whole run)"),
    llm_budget_usd: Optional[float] = typer.Option(None, "--llm-budget-usd", min=0.0,
                                                   help="stop LLM calls after this many dollars (needs --llm-price)"),
    llm_price: str = typer.Option("", "--llm-price", help="IN,OUT: $ per million input and output tokens"),
    llm_timeout: float = typer.Option(120.0, "--llm-timeout", min=1.0, help="seconds per LLM request"),
    llm_max_tokens: int = typer.Option(2048, "--llm-max-tokens", min=16, help="longest LLM answer, in tokens"),
    llm_key_env: Optional[str] = typer.Option(None, "--llm-key-env",
                                              help="environment variable holding the API key (default: OPENAI_API_KEY "
                                                   "or ANTHROPIC_API_KEY)"),
    unsafe_no_jail: bool = typer.Option(False, "--unsafe-no-jail", help="where the jail cannot start, run LLM-written "
                                        "code without it anyway (recorded in the archive and shown by every view)"),
    min_effect: list[str] = typer.Option([], "--min-effect", help="METRIC=X: the smallest confirmed change that counts "
                                         "as a discovery (repeatable; defaults overall=0.25 point of the accuracy metric, "
                                         "length=5 percent)"),
    rank_on: Optional[str] = typer.Option(None, "--rank-on", help="the accuracy metric selection, racing and the "
                                          "verdict rank on: overall (the paper's) or overall@K (K = 1, 2, 4, 8, 16: "
                                          "the sampled tiers at pass@K); default overall@2 on the sandbox, overall "
                                          "elsewhere"),
) -> None:
    """Run the discovery loop: select, propose, implement, verify, evaluate, reflect; then confirm the best."""
    from poise.agents.llm import LLMError
    from poise.backends import get_backend, make_spec
    from poise.discovery.archive import ArchiveError
    from poise.discovery.loop import DiscoverConfig, Loop
    from poise.evaluation.fidelity import estimate_s, minutes
    from poise.executors import InfraError
    from poise.isolation import JailUnavailable

    try:
        spec = make_spec(backend, fidelity, backend_config, gpus_elsewhere=executor == "ray")
        pspec = (make_spec(promote, fidelity, promote_config, "--promote", gpus_elsewhere=executor == "ray")
                 if promote else None)
    except ValueError as e:
        common.fail(str(e))
    if pspec is not None and pspec.name == spec.name:
        common.fail(f"--promote {promote}: the run already trains on {spec.name}; the cascade promotes from the "
                    f"cheap backend to another (e.g. --backend tiny --promote trl)")
    if promote_config is not None and not promote:
        common.fail("--promote-config needs --promote (e.g. --promote trl --promote-config real.toml)")
    if strategy not in ("lineage", "greedy", "random", "tournament"):
        common.fail(f"unknown --strategy {strategy!r}; choose lineage, greedy, random or tournament")
    if out is None:
        if resume:
            runs = sorted(Path("runs").glob("discover-*/archive.db"), key=lambda p: p.stat().st_mtime)
            if not runs:
                common.fail("--resume found no discovery run under runs/; pass the run folder with --out")
            out = runs[-1].parent
        else:
            out = Path("runs") / time.strftime("discover-%Y%m%d-%H%M%S")
    elif resume and not (out / "archive.db").exists():
        common.fail(f"--resume: {out} holds no archive.db; start a new run without --resume")
    agents = _agents_config(llm, role, llm_budget_tokens, llm_budget_usd, llm_price, llm_timeout, llm_max_tokens,
                            llm_key_env, resume)
    effects = {}
    for item in min_effect:
        k, sep, v = item.partition("=")
        try:
            effects[k.strip()] = float(v)
        except ValueError:
            common.fail(f"--min-effect {item!r}: expected METRIC=NUMBER, e.g. --min-effect overall=1 --min-effect length=5")
    from poise.evaluation.keys import ACCURACY_KEYS, SANDBOX_RANK_ON

    if rank_on is None:
        rank_on = SANDBOX_RANK_ON if spec.name == "tiny" else "overall"
    elif rank_on not in ACCURACY_KEYS:
        common.fail(f"--rank-on {rank_on!r}: choose one of {', '.join(ACCURACY_KEYS)} (overall is the paper's Overall)")
    elif rank_on != "overall" and int(rank_on.split("@")[1]) > (most := _samples_per_problem(spec)):
        common.fail(f"--rank-on {rank_on}: this backend scores its sampled benchmarks from {most} samples a problem, so "
                    f"pass@{rank_on.split('@')[1]} cannot be estimated; choose overall@K with K <= {most}, or overall")
    if executor not in ("local", "ray"):
        common.fail(f"unknown --executor {executor!r}; choose local or ray")
    if executor != "ray" and (ray_address or cpus_per_eval is not None or gpus_per_eval):
        common.fail("--ray-address, --cpus-per-eval and --gpus-per-eval need --executor ray")
    for vspec in (b for b in (spec, pspec) if b is not None and b.name == "verl"):
        want = int(((vspec.config or {}).get("verl") or {}).get("n_gpus_per_node", 1))
        if executor == "ray" and gpus_per_eval < want:
            common.fail(f"verl trains on {want} GPU(s) an evaluation ([verl] n_gpus_per_node): with --executor ray, "
                        f"reserve them with --gpus-per-eval {want}")
    if threads is None and cpus_per_eval is not None:
        threads = max(1, int(cpus_per_eval))
    cfg = DiscoverConfig(budget=budget, directive=directive.strip(), workers=workers, fidelity=spec.label,
                         min_effect=effects, backend=spec.name, backend_config=spec.config,
                         promote=pspec.name if pspec else "", promote_config=pspec.config if pspec else None,
                         promote_top=promote_top,
                         strategy=strategy, search_seed=seed,
                         reeval_seeds=tuple(range(1000 + 1, 1000 + reeval_seeds + 1)), reeval_top=reeval_top,
                         race_seeds=race_seeds, threads=threads, agents=agents, unsafe_no_jail=unsafe_no_jail,
                         rank_on=rank_on)
    try:
        with common.progress() as progress:
            events = _DiscoverEvents(progress, get_backend(spec).steps)
            loop = Loop(out, cfg, events, resume=resume, given=_given_settings(ctx))
            if executor == "ray":
                from poise.executors.ray import RayConfig, RayExecutor

                loop.executor = RayExecutor(loop.cfg.workers, RayConfig(ray_address, cpus_per_eval, gpus_per_eval))
                loop.executor.check_fits(loop.threads)
                common.console.print(loop.executor.describe())
            run_backend = get_backend(loop.cfg.backend_spec)  # a resumed run keeps its stored backend and fidelity
            events.steps = run_backend.steps
            reads = loop.objective.verdict_metric
            for k in set(effects) - {"length" if reads == "length" else "overall"}:
                common.console.print(f"note: --min-effect {k} does not apply here (this objective's verdict reads {reads})",
                                     style="yellow")
            loop.confirm_ids = list(confirm)
            common.console.print(f"[bold]poise discover[/] → {escape(str(out))}", soft_wrap=True)
            common.console.print(f"budget {loop.cfg.budget} · {loop.cfg.workers} worker(s) × {loop.threads} thread(s) · "
                                 f"strategy {loop.cfg.strategy} · {escape(loop.objective.describe())}")
            if resume:
                common.console.print("resumed with " + ("changes: " + "; ".join(loop.changes) if loop.changes else
                                                        "the run's stored settings (name an option to change it)"))
            if loop.cfg.agents.uses_llm:
                common.console.print(f"agents: {loop.agents.describe()} · LLM budget {loop.agents.budget.describe()}")
            base = 0 if loop.archive.entries() and loop.baseline().status == "evaluated" else 1
            todo = max(0, loop.cfg.budget - loop.finished())
            # racing's extra seeds, at the rate measured on the standard sandbox: about 0.4 of the candidates
            # are raced (docs/benchmarks.md §7: 6-14 racing trainings for 12 candidates at 3 seeds, 8 and 10 in §6)
            racing = round(0.4 * (loop.cfg.race_seeds - 1) * todo)
            if loop.cfg.paired and racing and loop.cfg.race_seeds > 1:  # the baseline races too, once a run
                racing += sum(not loop.archive.has_evaluation(0, loop.cfg.eval_seed + k, loop.cfg.fidelity)
                              for k in range(1, loop.cfg.race_seeds))
            left = base + todo + racing + (loop.cfg.reeval_top + 1) * len(loop.cfg.reeval_seeds)
            took = estimate_s(run_backend.expected_s(loop.threads), left, loop.threads, loop.cfg.workers)
            if loop.cfg.promote_spec is not None:
                promoted = (loop.cfg.promote_top + 1) * len(loop.cfg.reeval_seeds)
                left += promoted
                took += estimate_s(get_backend(loop.cfg.promote_spec).expected_s(loop.threads), promoted, loop.threads,
                                   loop.cfg.workers)
            common.console.print(f"estimate: about {minutes(took)} for {left} evaluations (about {racing} of them "
                                 f"racing seeds; {loop.cfg.workers} at a time, measured on 2 idle cores); the top bar "
                                 f"shows the time left as candidates finish")
            events.start(loop)
            summary = loop.run()
    except (ArchiveError, ValueError, LLMError, JailUnavailable) as e:
        common.fail(str(e))
    except InfraError as e:
        common.fail(f"{e}. Finished evaluations are in {out / 'archive.db'}; once the cluster is fixed, continue "
                    f"with: poise discover --resume --out {out}")
    except KeyboardInterrupt:
        common.err.print(f"[yellow]stopped.[/] Finished evaluations are in {out / 'archive.db'}; "
                         f"continue with: poise discover --resume --out {out}")
        raise typer.Exit(130) from None
    _print_discovery(summary)


# `poise discover` options -> the DiscoverConfig field each one sets
_DISCOVER_FIELDS = {"budget": "budget", "directive": "directive", "workers": "workers", "fidelity": "fidelity",
                    "backend": "backend", "backend_config": "backend_config", "promote": "promote",
                    "promote_config": "promote_config", "promote_top": "promote_top",
                    "strategy": "strategy", "seed": "search_seed", "reeval_seeds": "reeval_seeds",
                    "reeval_top": "reeval_top", "race_seeds": "race_seeds", "threads": "threads",
                    "unsafe_no_jail": "unsafe_no_jail", "llm": "agents.llm", "role": "agents.roles",
                    "llm_budget_tokens": "agents.budget_tokens", "llm_budget_usd": "agents.budget_usd",
                    "llm_price": "agents.price", "llm_timeout": "agents.timeout_s",
                    "llm_max_tokens": "agents.max_tokens", "llm_key_env": "agents.key_env", "min_effect": "min_effect",
                    "rank_on": "rank_on"}


def _samples_per_problem(spec) -> int:
    """The fewest samples a problem of any sampled held-out benchmark of the backend: overall@K needs K of them."""
    if spec.name == "tiny":
        from poise.evaluation.fidelity import get_fidelity

        return get_fidelity(spec.fidelity).eval.samples
    from poise.backends.trl.config import parse

    return min(b.k for b in parse(spec.config).benchmarks.values() if b.metric == "pass@k")


def _given_settings(ctx: typer.Context) -> frozenset[str]:
    """The settings the user named on the command line (or in the environment): a resumed run keeps
    every other one as it was stored, whatever this command's defaults are."""
    sources = {p: ctx.get_parameter_source(p) for p in _DISCOVER_FIELDS}
    return frozenset(f for p, f in _DISCOVER_FIELDS.items() if (s := sources[p]) is not None and s.name != "DEFAULT")


def _agents_config(llm, roles, budget_tokens, budget_usd, price, timeout, max_tokens, key_env, resume=False):
    from poise.agents.roles import AgentsConfig

    parsed = {}
    for r in roles:
        name, sep, spec = r.partition("=")
        if not sep or not spec.strip():
            common.fail(f"--role {r!r}: expected ROLE=MODEL or ROLE=offline, e.g. --role reflector=offline")
        parsed[name.strip()] = spec.strip()
    p = None
    if price:
        try:
            p = tuple(float(x) for x in price.split(","))
            assert len(p) == 2 and min(p) >= 0
        except (ValueError, AssertionError):
            common.fail(f"--llm-price {price!r}: expected IN,OUT in $ per million tokens, e.g. --llm-price 0.4,1.6")
    cfg = AgentsConfig(llm=llm.strip(), roles=parsed, budget_tokens=budget_tokens, budget_usd=budget_usd, price=p,
                       timeout_s=timeout, max_tokens=max_tokens, key_env=key_env)
    if resume:  # only the named options are given; the loop checks them merged with the stored agents
        return cfg
    try:
        cfg.validate()
    except ValueError as e:
        common.fail(str(e))
    if (budget_tokens or budget_usd or price) and not cfg.uses_llm:
        common.fail("--llm-budget-*/--llm-price apply to LLM agents: also pass --llm MODEL (or --role ROLE=MODEL)")
    return cfg


class _DiscoverEvents(Events):
    """Progress bars for the loop: one overall bar, one per evaluation in flight."""

    def __init__(self, progress: Progress, steps: int):
        self.p, self.steps = progress, steps
        self.tasks: dict[tuple[int, int], tuple[TaskID, str]] = {}
        self.total: TaskID | None = None

    def start(self, loop) -> None:
        # candidates still in flight from a stopped run are trained again: they advance the bar when they end
        self.total = self.p.add_task("candidates trained", total=loop.cfg.budget, completed=loop.finished(), info="")

    def message(self, text: str) -> None:  # loop messages quote candidates' names and errors: never markup
        self.p.console.print(escape(printable(text)), highlight=False)

    def eval_started(self, entry, seed, purpose) -> None:
        label = escape(printable(f"#{entry.id} {entry.name}" + (f" seed {seed}" if purpose in ("reeval", "race") else "")))
        self.tasks[(entry.id, seed)] = (self.p.add_task(label[:40], total=self.steps, info=purpose), purpose)

    def eval_step(self, entry_id, seed, step, row) -> None:
        t = self.tasks.get((entry_id, seed))
        if t is not None:
            self.p.update(t[0], completed=step + 1, info=f"acc {row['accuracy']:.2f} len {row['response_length']:.0f}")

    def eval_finished(self, entry, seed, ok, text) -> None:
        t = self.tasks.pop((entry.id, seed), None)
        if t is None:
            return
        text = escape(printable(text))
        self.p.update(t[0], completed=self.steps, info=text if ok else f"[red]{text}[/]")
        if t[1] == "search" and self.total is not None:
            self.p.advance(self.total)


def _print_discovery(summary) -> None:
    common.console.print(f"\n[bold]{summary.evaluated}[/] evaluated, {summary.failed} failed in training, "
                         f"{summary.rejected} rejected by the verifier · {summary.wall_s / 60:.1f} min · "
                         f"{summary.objective}")
    t = Table(title="best candidates on the search set")
    t.add_column("id")
    t.add_column("name", style="bold")
    t.add_column("objective", justify="right")
    for i, name, score in summary.best_search:
        t.add_row(str(i), name, f"{score:.2f}")
    common.console.print(t)
    if summary.confirmed:
        b = summary.baseline_confirm
        # a narrow terminal keeps what carries the verdict (the differences and the verdict itself, whole);
        # the per-arm hard pass@1 and length give way, and names fold
        narrow = common.console.width < 120
        t = Table(title=f"re-evaluation on fresh seeds and the confirmation held-out set (mean ± 95% CI, "
                        f"{b['seeds']} seeds)", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
        acc = summary.confirmed[0].accuracy  # what the verdict read, when it is not the paper's Overall
        names = ["candidate", "Overall", "hard pass@1", "length", *([f"Δ {acc}"] if acc != "overall" else []),
                 "Δ Overall", "Δ length", "verdict"]
        keep = [i for i, c in enumerate(names) if not (narrow and c in ("hard pass@1", "length"))]
        for i in keep:
            c = names[i]
            t.add_column(c, overflow="fold" if c == "candidate" else "ellipsis",
                         no_wrap=c != "candidate", min_width=13 if c == "verdict" else None)
        f = lambda d: f"{d['mean']:.1f} ± {(d['hi'] - d['lo']) / 2:.1f}"
        g = ((lambda d: f"{d['mean']:+.1f}±{(d['hi'] - d['lo']) / 2:.1f}") if narrow else
             (lambda d: f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"))
        rows = [["GRPO (baseline)", f(b["overall"]), f(b["hard_pass1"]), f(b["length"]), *([""] if acc != "overall" else []),
                 "", "", ""]]
        for d in summary.confirmed:
            rows.append([f"#{d.entry_id} {d.name}", f(d.overall), f(d.hard_pass1), f(d.length),
                         *([g(d.d_accuracy) if d.d_accuracy else ""] if acc != "overall" else []),
                         g(d.d_overall), g(d.d_length),
                         ("[green]" if d.verdict == "discovery" else "[yellow]") + d.verdict + "[/]"])
        for r in rows:
            t.add_row(*(r[i] for i in keep))
        common.console.print(t)
        _print_rule(summary.confirmed[0].needs)
    if summary.llm:
        _print_llm_usage(summary.llm)
    # paths and commands are printed whole (soft wrap): a terminal may fold them, but never mid-word by poise
    root = escape(str(summary.root))
    common.console.print(f"archive: {root}/archive.db", soft_wrap=True, highlight=False)
    common.console.print(f"summary: {root}/summary.json", soft_wrap=True, highlight=False)
    common.console.print(f"look at it: poise status {root} · poise report {root}", soft_wrap=True, highlight=False)


def _print_rule(needs: str) -> None:
    if needs:
        common.console.print(f"a discovery needs, over the whole 95% interval: {needs}", highlight=False)


def _print_llm_usage(usage: dict) -> None:
    t = Table(title="LLM use")
    for c in ("role", "calls", "from cache", "failed", "tokens in", "tokens out", "cost", "seconds"):
        t.add_column(c, justify="left" if c == "role" else "right")
    for role, u in sorted(usage.items(), key=lambda kv: kv[0] == "total"):
        cost = f"${u['usd']:.4f}" if u["price_known"] else "unknown"
        t.add_row(role, str(u["calls"]), str(u["cached"]), str(u["failed"]), f"{u['tokens_in']:,}",
                  f"{u['tokens_out']:,}", cost, f"{u['seconds']:.1f}", style="bold" if role == "total" else None)
    common.console.print(t)
