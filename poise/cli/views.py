"""Looking at a run: `poise status`, `show`, `export` and `report`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from poise.cli import common
from poise.cli.discover import _print_llm_usage, _print_rule


def _load_run(run: Path, trajectories: bool = True):
    from poise.report.view import RunError, RunView

    try:
        return RunView.load(run, trajectories=trajectories)
    except RunError as e:
        common.fail(str(e))


def _candidate(view, entry_id: int):
    from poise.report.view import RunError

    try:
        return view.get(entry_id)
    except RunError as e:
        common.fail(str(e))


@common.app.command("status")
def status_cmd(run: Path = typer.Argument(..., help="a run folder from `poise discover` (or its archive.db)")) -> None:
    """Show a discovery run: candidates, search and confirmation results with CIs, the Pareto front, the
    budget and LLM use. Safe while the run is going."""
    from poise.backends.base import BackendSpec
    from poise.report.view import pm

    view = _load_run(run, trajectories=False)
    cfg, b = view.config, view.budget()
    counts = view.counts()
    common.console.print(" · ".join([f"[bold]{escape(str(run))}[/]", f"budget {b['budget'] or '?'}",
                                     BackendSpec(cfg.get("backend", "tiny"), cfg.get("fidelity", "?")).describe]
                                    + ([f"promoted to {cfg['promote']}"] if cfg.get("promote") else [])
                                    + [f"{n} {s}" for s, n in sorted(counts.items())]))
    common.console.print(view.objective.describe())
    state = view.state()
    common.console.print(f"run: {escape(state)}", style="bold green" if state.startswith("running") else
                         "bold" if state == "finished" else "bold yellow", highlight=False)
    if view.unjailed_note:
        common.console.print(f"[bold red]{escape(view.unjailed_note)}[/]")
    uses_llm = bool(view.llm_calls)
    # a narrow terminal keeps the columns that identify and compare; the reasons go below the table
    width = common.console.width
    wide, compact = width >= 130, width < 120
    t = Table(title="candidates · search set: mean over its search seeds · confirmation: fresh seeds, "
                    "mean ± 95% CI (seeds)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    cols = (["id", "name", "parent"] + (["gen", "status", "objective"] if width >= 100 else ["status"])
            + ["Overall"] + (["seeds"] if width >= 100 else [])
            + (["Δ GRPO"] if wide else []) + ["length"] + (["confirm", "disc?"] if compact else
                                                           ["confirm Overall", "verdict"])
            + ([f"{cfg['promote']} Overall"] if cfg.get("promote") else [])
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
               "train min": f"{sum(v.wall_s for v in e.evaluations) / 60:.1f}" if e.evaluations else "",
               f"{cfg.get('promote')} Overall": pm(c.promoted["overall"]).replace("(n=", "(") if c.promoted else ""}
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
    common.console.print(t)
    _print_rule(view.discovery_rule())
    if seed_notes:
        common.console.print("search seeds behind Overall: 1 each, except " + ", ".join(seed_notes), highlight=False)
    for line in notes:
        common.console.print(line, highlight=False)
    if cfg.get("promote"):
        agree = view.run.rank_agreement()
        if agree is None:
            common.console.print(f"promoted to {cfg['promote']}: {sum(1 for c in view.candidates if c.promoted)} "
                                 f"entr(ies) so far; the rank agreement needs 2 or more")
        else:
            ci = (f" [{agree['lo']:+.2f}, {agree['hi']:+.2f}]" if agree["lo"] == agree["lo"]
                  else " (no interval below 4 entries)")
            common.console.print(f"cheap → {cfg['promote']} rank agreement (Spearman, search Overall against "
                                 f"{cfg['promote']} Overall): ρ = {agree['rho']:+.2f}{ci} over {agree['n']} entries",
                                 highlight=False)
    front = view.pareto_front()
    common.console.print("Pareto front (id*): " + (", ".join(f"#{c.id} {escape(c.name)}" for c in front) or "none yet"))
    noise = view.noise()
    if noise is not None:
        common.console.print(f"GRPO's seed-to-seed 95% half-width on Overall: ±{noise:.1f} "
                             f"({view.baseline_confirm['seeds']} "
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
    common.console.print(spent)
    _print_placements(view.placements())
    failures = view.agent_failures()
    if failures:
        last = failures[-1].payload
        common.console.print(f"[yellow]{len(failures)} agent step(s) failed[/]; the last ({last.get('role')}): "
                             f"{escape(str(last.get('reason', ''))[:200])}")
    if uses_llm:
        _print_llm_usage(view.llm_usage())


def _print_placements(places: list[dict], prefix: str = "evaluations ran on") -> None:
    """Where the evaluations ran (the local pool, Ray nodes), and which a lost worker or node made run again."""
    if not places:
        return
    counts: dict[str, int] = {}
    for p in places:
        counts[p["ran_on"]] = counts.get(p["ran_on"], 0) + 1
    line = f"{prefix}: " + ", ".join(f"{where} ×{n}" for where, n in counts.items())
    retried = [p for p in places if p["attempts"]]
    if retried:
        line += (f" · {len(retried)} run again after a lost worker or node: "
                 + ", ".join(f"#{p['entry']} seed {p['seed']} (lost on {', '.join(a['node'] or '?' for a in p['attempts'])})"
                             for p in retried[:5]) + (" ..." if len(retried) > 5 else ""))
    common.console.print(escape(line), highlight=False)


@common.app.command("show")
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
    common.console.rule(f"[bold]#{c.id} {escape(c.name)}[/] · {c.status} · generation {e.generation}"
                        + (f" · parent #{parent.id} {escape(parent.name)}" if parent else ""))
    if e.status_reason:
        common.console.print(f"[yellow]{escape(e.status_reason)}[/]")
    if view.unjailed_note:
        common.console.print(f"[bold red]{escape(view.unjailed_note)}[/]")
    common.console.print("[bold]Proposal[/]")
    for key in ("hypothesis", "mechanism", "math", "expected_dynamics", "rationale", "author"):
        if p.get(key):
            common.console.print(f"  [dim]{key.replace('_', ' ')}:[/] {escape(str(p[key]))}", highlight=False)
    if p.get("claims"):
        common.console.print(f"  [dim]claims:[/] {escape(', '.join(map(str, p['claims'])))}")
    if c.search:
        s, bs = c.search, view.baseline.search
        common.console.print(f"[bold]Search set[/] (one seed): Overall {s['overall']:.1f} (GRPO {bs['overall']:.1f}), hard "
                             f"pass@1 {s['hard_pass1']:.1f}, length {s['length']:.1f}, validity {s['validity']:.1f}"
                             + (f", objective {c.score:.2f}" if c.score is not None else "") + (" · on the Pareto front"
                                                                                               if c.pareto else ""))
    if c.confirmation:
        d = c.confirmation
        common.console.print(f"[bold]Confirmation[/] ({d.overall['n']} fresh seeds): Overall {pm(d.overall)}, length "
                             f"{pm(d.length)} · {d.verdict}: {d.reason}")
    _print_placements(view.placements(c.id), "its evaluations ran on")
    v = e.verification
    common.console.print("[bold]Verification[/]" + ((": passed" if v.get("ok") else f": failed at {v.get('stage')}")
                                                     if v else ": not verified yet")
                         + (f" · isolation: {escape(', '.join(v['isolation']))}" if (v or {}).get("isolation") else ""))
    for ch in (v or {}).get("checks", []):
        mark = "[green]✓[/]" if ch.get("ok") else "[red]✗[/]"
        common.console.print(f"  {mark} {escape(str(ch.get('name')))}" + (f" — {escape(str(ch.get('message')))}"
                                                                             if ch.get("message") else ""), highlight=False)
    for a in (v or {}).get("attempts", [])[:-1]:
        common.console.print(f"  attempt {a.get('attempt')}: {a.get('stage')} — "
                             f"{escape('; '.join(map(str, a.get('errors', [])))[:300])}", highlight=False)
    common.console.print("[bold]Code[/]" + (f" (diff against #{parent.id} {escape(parent.name)})" if parent else ""))
    if parent:
        diff = "\n".join(view.code_diff(c))
        common.console.print(Syntax(diff, "diff", word_wrap=True) if diff else "  (the same code as its parent)")
    else:
        common.console.print(Syntax(e.code, "python", word_wrap=True))
    r = e.reflection
    if r:  # the summary opens with the verdict ("fix: ..."); an LLM's may not
        summary, verdict = str(r.get("summary", "")), str(r.get("verdict"))
        head = summary if summary.startswith(verdict + ":") else f"{verdict} · {summary}"
    common.console.print("[bold]Reflection[/]: " + (escape(head) if r else "none yet"), highlight=False)
    if r:
        common.console.print(f"  {escape(str(r.get('diagnosis', '')))}", highlight=False)
        for f in r.get("findings", []):
            common.console.print(f"  - {escape(str(f.get('tag')))}: {escape(str(f.get('evidence')))}", highlight=False)
    groups = view.curves(c)
    if groups:
        out = plot or view.root / "plots" / f"candidate-{c.id}.png"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            plot_lineage(groups, out, dpi=110)
        except OSError as ex:
            common.fail(f"cannot write the curves plot to {out} ({ex.strerror}); choose another path with --plot")
        common.console.print(f"curves (beside its parent): {out}")


@common.app.command("export")
def export_cmd(run: Path = typer.Argument(..., help="a run folder from `poise discover`"),
               entry_id: int = typer.Argument(..., metavar="ID", help="the candidate's id (see `poise status RUN`)"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="the file to write (default: "
                                                  "./<name>.py; with --to verl a folder, default ./verl-<name>/)"),
               to: str = typer.Option("poise", "--to", help="poise: an algorithm file for `poise train` | verl: a verl "
                                      "plugin module and its launch script"),
               force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
    """Write a candidate as a standalone algorithm file (the built-ins' interface, its provenance in the
    docstring), ready for `poise train --algorithm FILE`; or, with --to verl, as a plugin for verl."""
    import re

    from poise.report.export import export_source

    view = _load_run(run, trajectories=False)
    c = _candidate(view, entry_id)
    if not c.entry.code.strip():
        common.fail(f"#{c.id} {escape(c.name)} has no code yet ({c.status}); export a candidate that was implemented")
    if to == "verl":
        _export_verl(view, c, out, force)
        return
    if to != "poise":
        common.fail(f"unknown --to {to!r}; choose poise (an algorithm file) or verl (a verl plugin)")
    if out is None:
        out = Path(re.sub(r"[^A-Za-z0-9_]+", "_", c.name.lower()).strip("_") + ".py")
    if out.suffix != ".py":
        common.fail(f"--out {out}: the file must end in .py, so that `poise train --algorithm {out.with_suffix('.py')}` "
                    f"can load it")
    if out.exists() and not force:
        common.fail(f"{out} exists; pass --force to overwrite it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(export_source(view, c))
    except OSError as ex:
        common.fail(f"cannot write {out} ({ex.strerror}); choose another --out")
    if c.status != "evaluated":
        common.err.print(f"[yellow]note:[/] #{c.id} {escape(c.name)} is {c.status}, not evaluated; its docstring says so")
    common.console.print(f"wrote {out} (#{c.id} {escape(c.name)}); train it with: poise train --algorithm {out} --seeds 3")


def _export_verl(view, c, out: Optional[Path], force: bool) -> None:
    """The verl plugin and launch script of ``c`` in the folder ``out``."""
    import dataclasses

    from poise.algorithms import BUILTINS, builtin_source
    from poise.algorithms.base import AlgoConfig
    from poise.backends.verl.launch import launch_script
    from poise.isolation.hook import HookError, HookProcess, JailUnavailable, choose_isolation
    from poise.report.export import slug, verl_plugin

    code = c.entry.code
    # poise wrote it only if it is a built-in's code, byte for byte: a run's settings can change on resume,
    # and an archive can come from anyone, so nothing else is trusted to run unjailed
    trusted = code in {builtin_source(b) for b in BUILTINS}
    out = out or Path(f"verl-{slug(c.name)}")
    if out.exists() and not out.is_dir():
        common.fail(f"--out {out} is a file; with --to verl it names a folder for the plugin and its launch script")
    try:  # its CONFIG, read where its code may run: the jailed hook process
        with HookProcess(code, c.name, f"archive:#{c.id}", jailed=choose_isolation(trusted).jailed) as hook:
            config, hooks = dataclasses.asdict(AlgoConfig.from_dict(hook.config)), hook.hooks
    except (HookError, JailUnavailable, ValueError) as e:
        common.fail(f"cannot load #{c.id} {escape(c.name)} to read its CONFIG: {escape(str(e))}")
    module, text = verl_plugin(view, c, config, hooks, trusted)
    files = {out / f"{module}.py": text, out / f"{module}_verl.sh": launch_script(module, config, "ref_logp" in code)}
    clash = [p for p in files if p.exists()]
    if clash and not force:
        common.fail(f"{clash[0]} exists; pass --force to overwrite it, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for p, t in files.items():
            p.write_text(t)
        (out / f"{module}_verl.sh").chmod(0o755)
    except OSError as ex:
        common.fail(f"cannot write {out} ({ex.strerror}); choose another --out")
    common.console.print(f"wrote {out}/{module}.py and {module}_verl.sh (#{c.id} {escape(c.name)}); train it with "
                         f"verl: MODEL=... TRAIN=train.parquet VAL=test.parquet bash {out}/{module}_verl.sh", soft_wrap=True)
    if config.get("dynamic_sampling"):
        common.err.print("[yellow]its CONFIG's dynamic_sampling is not carried over: verl's main trainer keeps a fixed "
                         "batch (the script's header says how verl's DAPO recipe refills it)[/]", soft_wrap=True)


@common.app.command("report")
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
        common.fail(f"--out {path}: the report is one HTML file; give a path ending in .html")
    try:
        write_report(view, path)
    except OSError as ex:
        common.fail(f"cannot write the report to {path} ({ex.strerror}); choose another path with --out")
    common.console.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {len(view.candidates)} entries, "
                         f"{time.time() - t0:.1f} s) · open it in a browser; it needs no network")
