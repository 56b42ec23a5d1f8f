"""The `poise` command."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from poise.isolation.text import printable

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="poise: automated discovery of RL algorithms for language models.")
# Output to a file or a pipe is not cut to 80 columns (rich's default off a terminal): it keeps its full
# lines, up to PIPE_WIDTH, unless COLUMNS says otherwise. A terminal gets its own width.
PIPE_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH)
err = Console(stderr=True, soft_wrap=True)  # error text stays on one line, so it can be grepped


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(msg)}")  # messages quote paths and archive text
    raise typer.Exit(code)


@app.command("algorithms")
def algorithms_cmd() -> None:
    """List the built-in algorithm library."""
    from poise.algorithms import describe_builtins

    t = Table(title="built-in algorithms", show_lines=False)
    t.add_column("name", style="bold")
    t.add_column("summary")
    for name, doc in describe_builtins():
        t.add_row(name, doc)
    console.print(t)
    console.print("Use one with [bold]poise train --algorithm NAME[/], or write your own file defining "
                  "compute_advantages(batch, cfg) and pass its path.")


def _progress() -> Progress:
    # at 80 columns the description and the info give way (cut with …), never the counts and the times
    return Progress(TextColumn("{task.description}", table_column=Column(max_width=32, no_wrap=True, overflow="ellipsis")),
                    BarColumn(bar_width=12), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, expand=True)


def _start_metrics(fid, seeds, progress) -> list:
    """Held-out results of the SFT start (no RL) for the same evaluation seeds, cached beside the policy."""
    from poise.backends.tiny import EvalResult, evaluate_start
    from poise.runs import write_json
    from poise.sandbox.sft import cache_dir, sft_key

    out = []
    key = sft_key(fid.model, fid.sft)
    from poise.sandbox.task import GREEDY_SCALE, TIERS

    # the start's results depend on the evaluation settings and on the tiers (not only on the policy)
    ekey = hashlib.sha256(json.dumps([fid.to_dict()["eval"], [dataclasses.asdict(t) for t in TIERS], GREEDY_SCALE],
                                     sort_keys=True).encode()).hexdigest()[:8]
    task = progress.add_task("evaluating the SFT start", total=len(seeds), info="")
    for s in seeds:
        path = cache_dir() / "sft" / f"{key}.eval-{ekey}-seed{s}.json"
        res = None
        if path.exists():
            try:
                res = EvalResult(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                res = None
        if res is None:
            res = evaluate_start(fid, s)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, res.to_dict())
        out.append(res)
        progress.advance(task)
    return out


@app.command("train")
def train_cmd(
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="a built-in name (see `poise algorithms`) or a .py file"),
    seeds: int = typer.Option(1, "--seeds", "-n", min=1, help="number of training seeds (0..N-1)"),
    fidelity: str = typer.Option("standard", "--fidelity", "-f", help="smoke | standard | full"),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="folder under which the run folder is created"),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for training"),
    seed_offset: int = typer.Option(0, "--seed-offset", min=0, help="first seed (seeds are offset..offset+N-1)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1.0, help="seconds one seed may take before it is "
                                            "stopped (default: 10x the fidelity's expected time)"),
    unsafe_no_jail: bool = typer.Option(False, "--unsafe-no-jail", help="where the jail cannot start, run the file "
                                        "without it anyway (recorded in the run folder)"),
) -> None:
    """Train the tiny policy with one algorithm over N seeds; print held-out results with 95% CIs."""
    import torch

    from poise.algorithms import BUILTINS, builtin_source
    from poise.backends.tiny import sft_policy
    from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation
    from poise.evaluation.fidelity import default_timeout_s, estimate_s, get_fidelity, minutes
    from poise.isolation import JailUnavailable, choose_isolation
    from poise.report.plots import plot_curves
    from poise.runs import new_run_dir, run_manifest, save_seed, summarize, versus, write_json, write_metrics_csv
    from poise.verify.static import static_check

    try:
        fid = get_fidelity(fidelity)
    except ValueError as e:
        _fail(str(e))
    if algorithm in BUILTINS:
        spec = AlgorithmSpec(algorithm)
        source, origin, label = builtin_source(algorithm), f"builtin:{algorithm}", algorithm
    else:
        path = Path(algorithm)
        if not path.exists():
            _fail(f"{algorithm!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing file")
        if path.is_dir() or path.suffix != ".py":
            _fail(f"{algorithm} must be a Python file (.py) defining compute_advantages(batch, cfg)")
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            _fail(f"cannot read {algorithm}: {e}")
        lint = static_check(source, str(path))
        if not lint.ok:
            _fail(f"{algorithm} cannot be trained:\n" + "\n".join(lint.errors))
        spec = AlgorithmSpec(path.stem, source, str(path))
        origin, label = str(path), path.stem
    try:
        isolation = choose_isolation(algorithm in BUILTINS, unsafe_no_jail)
    except JailUnavailable as e:
        _fail(str(e))
    if isolation.warning:
        err.print(f"[bold yellow]{escape(isolation.warning)}[/]")
    spec = dataclasses.replace(spec, jailed=isolation.jailed)
    timeout = timeout or default_timeout_s(fid.name, threads)
    seed_list = list(range(seed_offset, seed_offset + seeds))
    torch.set_num_threads(threads)

    run = new_run_dir(out, f"{label}-{fid.name}")
    write_json(run / "config.json", {**run_manifest(label, origin, source, fid.to_dict(), seed_list),
                                     "jailed": isolation.jailed, "isolation_warning": isolation.warning,
                                     "timeout_s": timeout})
    (run / "algorithm.py").write_text(source)
    console.print(f"[bold]poise train[/] {escape(label)} · fidelity {fid.name} · seeds {seed_list} → {escape(str(run))}",
                  soft_wrap=True)

    results, failures = [], []
    with _progress() as progress:
        sft_task = None

        def sft_prog(i, n, loss):
            nonlocal sft_task
            if sft_task is None:
                sft_task = progress.add_task("SFT warm start (once, cached)", total=n, info="")
            progress.update(sft_task, completed=i, info=f"loss {loss:.3f}")

        sft_policy(fid, sft_prog)
        start = _start_metrics(fid, seed_list, progress)
        progress.console.print(f"estimate: about {minutes(estimate_s(fid.name, len(seed_list), threads))} for "
                               f"{len(seed_list)} seed(s) (measured on 2 idle cores; refined after the first steps)")
        every = progress.add_task("all seeds", total=len(seed_list) * fid.rl.steps, info="")
        first: list[float] = []  # times of the first seed's first steps

        def measure(i: int) -> None:
            first.append(time.time())
            k = min(5, fid.rl.steps) - 1
            if i == k and k > 0:
                step_s = (first[-1] - first[0]) / k
                left = estimate_s(fid.name, len(seed_list), step_s=step_s, steps=fid.rl.steps) - step_s * (k + 1)
                progress.console.print(f"measured: {step_s:.2f} s a training step here, so about {minutes(left)} "
                                       f"left in all")
        for s in seed_list:
            task = progress.add_task(escape(f"{label} seed {s}"), total=fid.rl.steps, info="")

            def on_step(i, row, task=task, s=s):
                if s == seed_list[0] and len(first) < fid.rl.steps:
                    measure(i)
                progress.advance(every)
                progress.update(task, completed=i + 1,
                                info=f"acc {row['accuracy']:.2f} valid {row['validity']:.2f} "
                                     f"len {row['response_length']:.0f}")
            t0 = time.time()
            res = run_evaluation(spec, fid.name, s, threads, on_step, timeout_s=timeout)
            if isinstance(res, EvalFailure):
                progress.update(task, info="[red]failed[/]")
                failures.append(res)
                if res.kind == "load":  # the same file fails the same way on every seed
                    break
                continue
            progress.update(task, completed=fid.rl.steps,
                            info=f"Overall {res.metrics['overall']:.1f} ({time.time() - t0:.0f}s)")
            results.append(res)
            save_seed(run, res)

    for f in failures:
        head = {"load": "the algorithm file is unusable", "candidate": "the algorithm failed during training",
                "crash": "the evaluation crashed", "timeout": "the evaluation timed out",
                "memory": "the evaluation ran out of memory",
                "internal": "internal error in poise (please report it)"}.get(f.kind, f.kind)
        err.print(f"[bold red]seed {f.seed}: {head}[/]\n{escape(f.message)}")
    if not results:
        write_json(run / "failures.json", [f.__dict__ for f in failures])
        raise typer.Exit(2)

    summary = {"algorithm": summarize(results), "sft_start": summarize(start), "vs_start": versus(results, start),
               "failures": [f.__dict__ for f in failures]}
    write_json(run / "summary.json", summary)
    write_metrics_csv(run / "metrics.csv", [(label, r) for r in results] + [("sft_start", r) for r in start])
    plot_curves({label: [r.trajectory for r in results]}, run / "curves.png")
    _print_table(label, summary, len(results))
    for what, name in (("curves", "curves.png"), ("metrics", "metrics.csv"), ("summary", "summary.json")):
        console.print(f"{what}: {escape(str(run / name))}", soft_wrap=True, highlight=False)
    if failures:
        raise typer.Exit(1)


def _print_table(label: str, summary: dict, n: int) -> None:
    from poise.evaluation.metrics import CI
    from poise.sandbox.task import TIERS

    a, b, d = summary["algorithm"], summary["sft_start"], summary["vs_start"]
    t = Table(title=f"held-out results, mean ± 95% CI over {n} seed(s); Δ: Welch 95% CI of {label} - start")
    t.add_column("tier")
    t.add_column("metric")
    t.add_column("SFT start", justify="right")
    t.add_column(label, justify="right", style="bold")
    t.add_column("Δ", justify="right")

    def fmt(x):
        return str(CI(x["mean"], x["lo"], x["hi"], x["n"], x["std"]))

    def delta(x):
        return f"{x['mean']:+.1f}" + ("" if x["lo"] != x["lo"] else f" ± {(x['hi'] - x['lo']) / 2:.1f}")
    for tier in TIERS:
        metric = "greedy acc" if tier.metric == "greedy" else "pass@k"
        t.add_row(tier.name, metric, fmt(b["tiers"][tier.name]), fmt(a["tiers"][tier.name]), delta(d[tier.name]))
    t.add_row("hard tiers", "pass@1", fmt(b["hard_pass@1"]), fmt(a["hard_pass@1"]), delta(d["hard_pass@1"]))
    t.add_row("Overall", "weighted", fmt(b["overall"]), fmt(a["overall"]), delta(d["overall"]), style="bold")
    t.add_row("length", "tokens", fmt(b["length"]), fmt(a["length"]), delta(d["length"]))
    t.add_row("validity", "%", fmt(b["validity"]), fmt(a["validity"]), delta(d["validity"]))
    console.print(t)
    o = d["overall"]
    if o["lo"] != o["lo"]:  # nan: one seed
        console.print(f"Overall {label} - start: {o['mean']:+.1f}; train 2 or more seeds for an interval")
    else:
        said = ("above its start" if o["lo"] > 0 else "below its start" if o["hi"] < 0
                else "not separated from its start (the interval contains 0)")
        console.print(f"Overall {label} - start: {o['mean']:+.1f} [{o['lo']:+.1f}, {o['hi']:+.1f}] "
                      f"(Welch 95%, {a['overall']['n']} and {b['overall']['n']} seeds): {said}")


@app.command("discover")
def discover_cmd(
    ctx: typer.Context,
    budget: int = typer.Option(8, "--budget", "-b", min=1, help="candidates to train (verification rejects do not count)"),
    directive: str = typer.Option("", "--directive", "-d", help='what to look for, e.g. "accurate and concise"'),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="evaluations run in parallel (separate processes)"),
    fidelity: str = typer.Option("standard", "--fidelity", "-f", help="smoke | standard | full"),
    strategy: str = typer.Option("lineage", "--strategy", help="parent selection: lineage | greedy | random | tournament"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default: runs/discover-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out (or the latest one under runs/)"),
    seed: int = typer.Option(0, "--seed", help="search seed (parent selection and proposal exploration)"),
    reeval_seeds: int = typer.Option(3, "--reeval-seeds", min=0, help="fresh seeds for re-evaluating the best candidates"),
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
                                         "as a discovery (repeatable; defaults overall=1 point, length=5 percent)"),
) -> None:
    """Run the discovery loop: select, propose, implement, verify, evaluate, reflect; then confirm the best."""
    from poise.agents.llm import LLMError
    from poise.discovery.archive import ArchiveError
    from poise.discovery.loop import DiscoverConfig, Loop
    from poise.evaluation.fidelity import estimate_s, get_fidelity, minutes
    from poise.isolation import JailUnavailable

    try:
        fid = get_fidelity(fidelity)
    except ValueError as e:
        _fail(str(e))
    if strategy not in ("lineage", "greedy", "random", "tournament"):
        _fail(f"unknown --strategy {strategy!r}; choose lineage, greedy, random or tournament")
    if out is None:
        if resume:
            runs = sorted(Path("runs").glob("discover-*/archive.db"), key=lambda p: p.stat().st_mtime)
            if not runs:
                _fail("--resume found no discovery run under runs/; pass the run folder with --out")
            out = runs[-1].parent
        else:
            out = Path("runs") / time.strftime("discover-%Y%m%d-%H%M%S")
    elif resume and not (out / "archive.db").exists():
        _fail(f"--resume: {out} holds no archive.db; start a new run without --resume")
    agents = _agents_config(llm, role, llm_budget_tokens, llm_budget_usd, llm_price, llm_timeout, llm_max_tokens,
                            llm_key_env, resume)
    effects = {}
    for item in min_effect:
        k, sep, v = item.partition("=")
        try:
            effects[k.strip()] = float(v)
        except ValueError:
            _fail(f"--min-effect {item!r}: expected METRIC=NUMBER, e.g. --min-effect overall=1 --min-effect length=5")
    cfg = DiscoverConfig(budget=budget, directive=directive.strip(), workers=workers, fidelity=fid.name, min_effect=effects,
                         strategy=strategy, search_seed=seed,
                         reeval_seeds=tuple(range(1000 + 1, 1000 + reeval_seeds + 1)), reeval_top=reeval_top,
                         race_seeds=race_seeds, threads=threads, agents=agents, unsafe_no_jail=unsafe_no_jail)
    try:
        with _progress() as progress:
            events = _DiscoverEvents(progress, fid.rl.steps)
            loop = Loop(out, cfg, events, resume=resume, given=_given_settings(ctx))
            events.steps = get_fidelity(loop.cfg.fidelity).rl.steps  # a resumed run keeps its stored fidelity
            reads = loop.objective.verdict_metric
            for k in set(loop.cfg.min_effect) - {reads}:
                console.print(f"note: --min-effect {k} does not apply here (this objective's verdict reads {reads})",
                              style="yellow")
            loop.confirm_ids = list(confirm)
            console.print(f"[bold]poise discover[/] → {escape(str(out))}", soft_wrap=True)
            console.print(f"budget {loop.cfg.budget} · {loop.cfg.workers} worker(s) × {loop.threads} thread(s) · "
                          f"strategy {loop.cfg.strategy} · {escape(loop.objective.describe())}")
            if resume:
                console.print("resumed with " + ("changes: " + "; ".join(loop.changes) if loop.changes else
                                                 "the run's stored settings (name an option to change it)"))
            if loop.cfg.agents.uses_llm:
                console.print(f"agents: {loop.agents.describe()} · LLM budget {loop.agents.budget.describe()}")
            base = 0 if loop.archive.entries() and loop.baseline().status == "evaluated" else 1
            left = base + max(0, loop.cfg.budget - loop.finished()) + (loop.cfg.reeval_top + 1) * len(loop.cfg.reeval_seeds)
            took = estimate_s(loop.cfg.fidelity, left, loop.threads, loop.cfg.workers)
            console.print(f"estimate: about {minutes(took)} for "
                          f"{left} evaluations ({loop.cfg.workers} at a time, measured on 2 idle cores), more with "
                          f"racing seeds; the top bar shows the time left as candidates finish")
            events.start(loop)
            summary = loop.run()
    except (ArchiveError, ValueError, LLMError, JailUnavailable) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        err.print(f"[yellow]stopped.[/] Finished evaluations are in {out / 'archive.db'}; "
                  f"continue with: poise discover --resume --out {out}")
        raise typer.Exit(130) from None
    _print_discovery(summary)


# `poise discover` options -> the DiscoverConfig field each one sets
_DISCOVER_FIELDS = {"budget": "budget", "directive": "directive", "workers": "workers", "fidelity": "fidelity",
                    "strategy": "strategy", "seed": "search_seed", "reeval_seeds": "reeval_seeds",
                    "reeval_top": "reeval_top", "race_seeds": "race_seeds", "threads": "threads",
                    "unsafe_no_jail": "unsafe_no_jail", "llm": "agents.llm", "role": "agents.roles",
                    "llm_budget_tokens": "agents.budget_tokens", "llm_budget_usd": "agents.budget_usd",
                    "llm_price": "agents.price", "llm_timeout": "agents.timeout_s",
                    "llm_max_tokens": "agents.max_tokens", "llm_key_env": "agents.key_env", "min_effect": "min_effect"}


def _given_settings(ctx: typer.Context) -> frozenset[str]:
    """The settings the user named on the command line (or in the environment): a resumed run keeps
    every other one as it was stored, whatever this command's defaults are."""
    sources = {p: ctx.get_parameter_source(p) for p in _DISCOVER_FIELDS}
    return frozenset(f for p, f in _DISCOVER_FIELDS.items() if sources[p] is not None and sources[p].name != "DEFAULT")


def _agents_config(llm, roles, budget_tokens, budget_usd, price, timeout, max_tokens, key_env, resume=False):
    from poise.agents.roles import AgentsConfig

    parsed = {}
    for r in roles:
        name, sep, spec = r.partition("=")
        if not sep or not spec.strip():
            _fail(f"--role {r!r}: expected ROLE=MODEL or ROLE=offline, e.g. --role reflector=offline")
        parsed[name.strip()] = spec.strip()
    p = None
    if price:
        try:
            p = tuple(float(x) for x in price.split(","))
            assert len(p) == 2 and min(p) >= 0
        except (ValueError, AssertionError):
            _fail(f"--llm-price {price!r}: expected IN,OUT in $ per million tokens, e.g. --llm-price 0.4,1.6")
    cfg = AgentsConfig(llm=llm.strip(), roles=parsed, budget_tokens=budget_tokens, budget_usd=budget_usd, price=p,
                       timeout_s=timeout, max_tokens=max_tokens, key_env=key_env)
    if resume:  # only the named options are given; the loop checks them merged with the stored agents
        return cfg
    try:
        cfg.validate()
    except ValueError as e:
        _fail(str(e))
    if (budget_tokens or budget_usd or price) and not cfg.uses_llm:
        _fail("--llm-budget-*/--llm-price apply to LLM agents: also pass --llm MODEL (or --role ROLE=MODEL)")
    return cfg


class _DiscoverEvents:
    """Progress bars for the loop: one overall bar, one per evaluation in flight."""

    def __init__(self, progress: Progress, steps: int):
        self.p, self.steps, self.tasks, self.total = progress, steps, {}, None

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
    console.print(f"\n[bold]{summary.evaluated}[/] evaluated, {summary.failed} failed in training, "
                  f"{summary.rejected} rejected by the verifier · {summary.wall_s / 60:.1f} min · {summary.objective}")
    t = Table(title="best candidates on the search set")
    t.add_column("id")
    t.add_column("name", style="bold")
    t.add_column("objective", justify="right")
    for i, name, score in summary.best_search:
        t.add_row(str(i), name, f"{score:.2f}")
    console.print(t)
    if summary.confirmed:
        b = summary.baseline_confirm
        # a narrow terminal keeps what carries the verdict (the differences and the verdict itself, whole);
        # the per-arm hard pass@1 and length give way, and names fold
        narrow = console.width < 120
        t = Table(title=f"re-evaluation on fresh seeds and the confirmation held-out set (mean ± 95% CI, "
                        f"{b['seeds']} seeds)", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
        names = ["candidate", "Overall", "hard pass@1", "length", "Δ Overall", "Δ length", "verdict"]
        keep = [i for i, c in enumerate(names) if not (narrow and c in ("hard pass@1", "length"))]
        for i in keep:
            c = names[i]
            t.add_column(c, overflow="fold" if c == "candidate" else "ellipsis",
                         no_wrap=c != "candidate", min_width=13 if c == "verdict" else None)
        f = lambda d: f"{d['mean']:.1f} ± {(d['hi'] - d['lo']) / 2:.1f}"
        g = ((lambda d: f"{d['mean']:+.1f}±{(d['hi'] - d['lo']) / 2:.1f}") if narrow else
             (lambda d: f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"))
        rows = [["GRPO (baseline)", f(b["overall"]), f(b["hard_pass1"]), f(b["length"]), "", "", ""]]
        for d in summary.confirmed:
            rows.append([f"#{d.entry_id} {d.name}", f(d.overall), f(d.hard_pass1), f(d.length), g(d.d_overall),
                         g(d.d_length), ("[green]" if d.verdict == "discovery" else "[yellow]") + d.verdict + "[/]"])
        for r in rows:
            t.add_row(*(r[i] for i in keep))
        console.print(t)
        _print_rule(summary.confirmed[0].needs)
    if summary.llm:
        _print_llm_usage(summary.llm)
    # paths and commands are printed whole (soft wrap): a terminal may fold them, but never mid-word by poise
    root = escape(str(summary.root))
    console.print(f"archive: {root}/archive.db", soft_wrap=True, highlight=False)
    console.print(f"summary: {root}/summary.json", soft_wrap=True, highlight=False)
    console.print(f"look at it: poise status {root} · poise report {root}", soft_wrap=True, highlight=False)


def _print_rule(needs: str) -> None:
    if needs:
        console.print(f"a discovery needs, over the whole 95% interval: {needs}", highlight=False)


def _print_llm_usage(usage: dict) -> None:
    t = Table(title="LLM use")
    for c in ("role", "calls", "from cache", "failed", "tokens in", "tokens out", "cost", "seconds"):
        t.add_column(c, justify="left" if c == "role" else "right")
    for role, u in sorted(usage.items(), key=lambda kv: kv[0] == "total"):
        cost = f"${u['usd']:.4f}" if u["price_known"] else "unknown"
        t.add_row(role, str(u["calls"]), str(u["cached"]), str(u["failed"]), f"{u['tokens_in']:,}",
                  f"{u['tokens_out']:,}", cost, f"{u['seconds']:.1f}", style="bold" if role == "total" else None)
    console.print(t)


def _load_run(run: Path, trajectories: bool = True):
    from poise.report.view import RunError, RunView

    try:
        return RunView.load(run, trajectories=trajectories)
    except RunError as e:
        _fail(str(e))


def _candidate(view, entry_id: int):
    from poise.report.view import RunError

    try:
        return view.get(entry_id)
    except RunError as e:
        _fail(str(e))


@app.command("status")
def status_cmd(run: Path = typer.Argument(..., help="a run folder from `poise discover` (or its archive.db)")) -> None:
    """Show a discovery run: candidates, search and confirmation results with CIs, the Pareto front, the
    budget and LLM use. Safe while the run is going."""
    from poise.report.view import pm

    view = _load_run(run, trajectories=False)
    cfg, b = view.config, view.budget()
    counts = view.counts()
    console.print(" · ".join([f"[bold]{escape(str(run))}[/]", f"budget {b['budget'] or '?'}",
                              f"fidelity {cfg.get('fidelity', '?')}"] + [f"{n} {s}" for s, n in sorted(counts.items())]))
    console.print(view.objective.describe())
    state = view.state()
    console.print(f"run: {escape(state)}", style="bold green" if state.startswith("running") else
                  "bold" if state == "finished" else "bold yellow", highlight=False)
    if view.unjailed_note:
        console.print(f"[bold red]{escape(view.unjailed_note)}[/]")
    uses_llm = bool(view.llm_calls)
    # a narrow terminal keeps the columns that identify and compare; the reasons go below the table
    width = console.width
    wide, compact = width >= 130, width < 120
    t = Table(title="candidates · search set: mean over its search seeds · confirmation: fresh seeds, "
                    "mean ± 95% CI (seeds)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    cols = (["id", "name", "parent"] + (["gen", "status", "objective"] if width >= 100 else ["status"])
            + ["Overall"] + (["seeds"] if width >= 100 else [])
            + (["Δ GRPO"] if wide else []) + ["length"] + (["confirm", "disc?"] if compact else
                                                           ["confirm Overall", "verdict"])
            + (["train min"] if wide else [])
            + (["LLM tokens", "LLM $", "LLM s"] if uses_llm and wide else []) + (["note"] if wide else []))
    longest = max(len(c.name) for c in view.candidates) + 2
    for c in cols:
        if c == "name":
            t.add_column(c, overflow="fold", min_width=min(longest, 12 if width < 100 else 20))
        elif c == "note":
            t.add_column(c, overflow="fold", ratio=1)
        else:
            t.add_column(c, justify="left" if c in ("status", "verdict", "disc?") else "right", no_wrap=True)
    base = view.baseline.search
    notes, seed_notes = [], []
    for c in view.candidates:
        e, s = c.entry, c.search
        conf = c.confirmation.overall if c.confirmation else (view.baseline_confirm.get("overall") if c.id == 0 else None)
        verdict = ""
        if c.confirmation:
            ok = c.confirmation.verdict == "discovery"
            word = ("yes" if ok else "no") if compact else c.confirmation.verdict
            verdict = ("[green]" if ok else "[yellow]") + word + "[/]"
        colour = {"evaluated": "green", "rejected": "yellow", "failed": "red"}.get(c.status, "cyan")
        row = {"id": f"{c.id}{'*' if c.pareto else ''}", "name": escape(e.name),
               "parent": "" if e.parent_id is None else str(e.parent_id), "gen": str(e.generation),
               "status": f"[{colour}]{c.status}[/]", "objective": "" if c.score is None else f"{c.score:.2f}",
               "Overall": f"{s['overall']:.1f}" if s else "",
               "seeds": str(len(e.search_evaluations(cfg.get("fidelity")))) if s else "",
               "Δ GRPO": f"{s['overall'] - base['overall']:+.1f}" if s and base and c.id != 0 else "",
               "length": f"{s['length']:.1f}" if s else "",
               "confirm Overall": pm(conf).replace("(n=", "(") if conf else "",
               "confirm": pm(conf).split(" (")[0].replace(" ± ", "±") if conf else "", "verdict": verdict,
               "train min": f"{sum(v.wall_s for v in e.evaluations) / 60:.1f}" if e.evaluations else ""}
        tok, usd, sec = e.cost.get("llm_tokens"), e.cost.get("llm_usd"), e.cost.get("llm_s")
        row.update({"LLM tokens": f"{tok:,.0f}" if tok else "", "LLM $": f"{usd:.4f}" if usd else "",
                    "LLM s": f"{sec:.1f}" if sec else ""})
        reason = e.status_reason.splitlines()[0] if e.status_reason else ""
        row["note"] = escape(reason[:100])
        if reason and not wide:
            notes.append(f"  #{c.id} {escape(e.name)} ({c.status}): {escape(reason[:160])}")
        row["disc?"] = verdict
        if s and width < 100 and row["seeds"] != "1":  # no room for the column: say it below the table
            seed_notes.append(f"#{c.id} {row['seeds']}")
        t.add_row(*(row[k] for k in cols))
    console.print(t)
    _print_rule(view.discovery_rule())
    if seed_notes:
        console.print("search seeds behind Overall: 1 each, except " + ", ".join(seed_notes), highlight=False)
    for line in notes:
        console.print(line, highlight=False)
    front = view.pareto_front()
    console.print("Pareto front (id*): " + (", ".join(f"#{c.id} {escape(c.name)}" for c in front) or "none yet"))
    noise = view.noise()
    if noise is not None:
        console.print(f"GRPO's seed-to-seed 95% half-width on Overall: ±{noise:.1f} ({view.baseline_confirm['seeds']} "
                      f"fresh seeds); single-seed search gaps below it are noise")
    spent = (f"budget: trained {b['trained']}/{b['budget']} · proposals {b['proposals']}/{b['max_proposals']}"
             + (f" · {b['in_flight']} in flight" if b["in_flight"] and view.writer is not None else
                f" · {b['unfinished']} unfinished" if b["unfinished"] and not view.finished else "")
             + f" · training {b['train_s'] / 60:.1f} min")
    if b["llm"]:
        u = b["llm"]
        spent += f" · LLM {u['tokens_in'] + u['tokens_out']:,} tokens"
        if b["llm_budget_tokens"]:
            spent += f" of {b['llm_budget_tokens']:,}"
        spent += f", ${u['usd']:.4f}" if u["price_known"] else ", cost unknown"
        if b["llm_budget_usd"]:
            spent += f" of ${b['llm_budget_usd']:g}"
    console.print(spent)
    failures = view.agent_failures()
    if failures:
        last = failures[-1].payload
        console.print(f"[yellow]{len(failures)} agent step(s) failed[/]; the last ({last.get('role')}): "
                      f"{escape(str(last.get('reason', ''))[:200])}")
    if uses_llm:
        _print_llm_usage(view.llm_usage())


@app.command("show")
def show_cmd(run: Path = typer.Argument(..., help="a run folder from `poise discover`"),
             entry_id: int = typer.Argument(..., metavar="ID", help="the candidate's id (see `poise status RUN`)"),
             plot: Optional[Path] = typer.Option(None, "--plot", help="where to write the curves plot "
                                                 "(default: RUN/plots/candidate-ID.png)")) -> None:
    """One candidate: its proposal, code diff against its parent, verification, curves (a plot file) and
    reflection."""
    from rich.syntax import Syntax

    from poise.report.plots import plot_lineage
    from poise.report.view import pm

    view = _load_run(run)
    c = _candidate(view, entry_id)
    e, p = c.entry, c.entry.proposal or {}
    parent = view.parent(c)
    console.rule(f"[bold]#{c.id} {escape(c.name)}[/] · {c.status} · generation {e.generation}"
                 + (f" · parent #{parent.id} {escape(parent.name)}" if parent else ""))
    if e.status_reason:
        console.print(f"[yellow]{escape(e.status_reason)}[/]")
    if view.unjailed_note:
        console.print(f"[bold red]{escape(view.unjailed_note)}[/]")
    console.print("[bold]Proposal[/]")
    for key in ("hypothesis", "mechanism", "math", "expected_dynamics", "rationale", "author"):
        if p.get(key):
            console.print(f"  [dim]{key.replace('_', ' ')}:[/] {escape(str(p[key]))}", highlight=False)
    if p.get("claims"):
        console.print(f"  [dim]claims:[/] {escape(', '.join(map(str, p['claims'])))}")
    if c.search:
        s, bs = c.search, view.baseline.search
        console.print(f"[bold]Search set[/] (one seed): Overall {s['overall']:.1f} (GRPO {bs['overall']:.1f}), hard "
                      f"pass@1 {s['hard_pass1']:.1f}, length {s['length']:.1f}, validity {s['validity']:.1f}"
                      + (f", objective {c.score:.2f}" if c.score is not None else "") + (" · on the Pareto front"
                                                                                        if c.pareto else ""))
    if c.confirmation:
        d = c.confirmation
        console.print(f"[bold]Confirmation[/] ({d.overall['n']} fresh seeds): Overall {pm(d.overall)}, length "
                      f"{pm(d.length)} · {d.verdict}: {d.reason}")
    v = e.verification
    console.print("[bold]Verification[/]" + ((": passed" if v.get("ok") else f": failed at {v.get('stage')}")
                                              if v else ": not verified yet")
                  + (f" · isolation: {escape(', '.join(v['isolation']))}" if (v or {}).get("isolation") else ""))
    for ch in (v or {}).get("checks", []):
        mark = "[green]✓[/]" if ch.get("ok") else "[red]✗[/]"
        console.print(f"  {mark} {escape(str(ch.get('name')))}" + (f" — {escape(str(ch.get('message')))}"
                                                                      if ch.get("message") else ""), highlight=False)
    for a in (v or {}).get("attempts", [])[:-1]:
        console.print(f"  attempt {a.get('attempt')}: {a.get('stage')} — "
                      f"{escape('; '.join(map(str, a.get('errors', [])))[:300])}", highlight=False)
    console.print("[bold]Code[/]" + (f" (diff against #{parent.id} {escape(parent.name)})" if parent else ""))
    if parent:
        diff = "\n".join(view.code_diff(c))
        console.print(Syntax(diff, "diff", word_wrap=True) if diff else "  (the same code as its parent)")
    else:
        console.print(Syntax(e.code, "python", word_wrap=True))
    r = e.reflection
    if r:  # the summary opens with the verdict ("fix: ..."); an LLM's may not
        summary, verdict = str(r.get("summary", "")), str(r.get("verdict"))
        head = summary if summary.startswith(verdict + ":") else f"{verdict} · {summary}"
    console.print("[bold]Reflection[/]: " + (escape(head) if r else "none yet"), highlight=False)
    if r:
        console.print(f"  {escape(str(r.get('diagnosis', '')))}", highlight=False)
        for f in r.get("findings", []):
            console.print(f"  - {escape(str(f.get('tag')))}: {escape(str(f.get('evidence')))}", highlight=False)
    groups = view.curves(c)
    if groups:
        out = plot or view.root / "plots" / f"candidate-{c.id}.png"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            plot_lineage(groups, out, dpi=110)
        except OSError as ex:
            _fail(f"cannot write the curves plot to {out} ({ex.strerror}); choose another path with --plot")
        console.print(f"curves (beside its parent): {out}")


@app.command("export")
def export_cmd(run: Path = typer.Argument(..., help="a run folder from `poise discover`"),
               entry_id: int = typer.Argument(..., metavar="ID", help="the candidate's id (see `poise status RUN`)"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="the file to write (default: "
                                                  "./<name>.py in the current folder)"),
               force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
    """Write a candidate as a standalone algorithm file (the built-ins' interface, its provenance in the
    docstring), ready for `poise train --algorithm FILE`."""
    import re

    from poise.report.export import export_source

    view = _load_run(run, trajectories=False)
    c = _candidate(view, entry_id)
    if not c.entry.code.strip():
        _fail(f"#{c.id} {escape(c.name)} has no code yet ({c.status}); export a candidate that was implemented")
    if out is None:
        out = Path(re.sub(r"[^A-Za-z0-9_]+", "_", c.name.lower()).strip("_") + ".py")
    if out.suffix != ".py":
        _fail(f"--out {out}: the file must end in .py, so that `poise train --algorithm {out.with_suffix('.py')}` "
              f"can load it")
    if out.exists() and not force:
        _fail(f"{out} exists; pass --force to overwrite it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(export_source(view, c))
    except OSError as ex:
        _fail(f"cannot write {out} ({ex.strerror}); choose another --out")
    if c.status != "evaluated":
        err.print(f"[yellow]note:[/] #{c.id} {escape(c.name)} is {c.status}, not evaluated; its docstring says so")
    console.print(f"wrote {out} (#{c.id} {escape(c.name)}); train it with: poise train --algorithm {out} --seeds 3")


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="a run folder from `poise discover`"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="the HTML file (default: "
                                                  "RUN/report.html)")) -> None:
    """One self-contained HTML report of a run: genealogy tree, leaderboard with CIs against GRPO, curves
    beside the parent's, code diffs and reflections. Opens offline."""
    from poise.report.html import write_report

    t0 = time.time()
    view = _load_run(run)
    path = out or view.root / "report.html"
    if path.suffix.lower() not in (".html", ".htm"):
        _fail(f"--out {path}: the report is one HTML file; give a path ending in .html")
    try:
        write_report(view, path)
    except OSError as ex:
        _fail(f"cannot write the report to {path} ({ex.strerror}); choose another path with --out")
    console.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {len(view.candidates)} entries, "
                  f"{time.time() - t0:.1f} s) · open it in a browser; it needs no network")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
