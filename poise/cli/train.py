"""`poise train`: train built-in or file algorithms on seeds, against the warm start, with CIs."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from poise.cli import common


def _start_metrics(backend, seeds, progress) -> list:
    """Held-out results of the start (no RL) for the same evaluation seeds, cached by the backend's
    fingerprint (what its numbers depend on: the start, the benchmarks, the evaluation settings)."""
    from poise.backends import EvalResult
    from poise.runs import write_json
    from poise.sandbox.sft import cache_dir

    out = []
    key = f"{backend.spec.name}-{backend.fingerprint()}"
    task = progress.add_task("evaluating the start", total=len(seeds), info="")
    for s in seeds:
        path = cache_dir() / "starts" / f"{key}-seed{s}.json"
        res = None
        if path.exists():
            try:
                res = EvalResult(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                res = None
        if res is None:
            res = backend.evaluate_start(s)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, res.to_dict())
        out.append(res)
        progress.advance(task)
    return out


@common.app.command("train")
def train_cmd(
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="a built-in name (see `poise algorithms`) or a .py file"),
    seeds: int = typer.Option(1, "--seeds", "-n", min=1, help="number of training seeds (0..N-1)"),
    fidelity: str = typer.Option("standard", "--fidelity", "-f", help="smoke | standard | full (the tiny backend)"),
    backend: str = typer.Option("tiny", "--backend", help="what trains it: tiny (the embedded sandbox) | trl (a Hugging "
                                "Face model with TRL; extra [trl]) "
                                "| verl (your verl recipe with the candidate as its plugin; GPUs)"),
    backend_config: Optional[Path] = typer.Option(None, "--backend-config", help="the backend's TOML file (see README)"),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="folder under which the run folder is created"),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for training"),
    seed_offset: int = typer.Option(0, "--seed-offset", min=0, help="first seed (seeds are offset..offset+N-1)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1.0, help="seconds one seed may take before it is "
                                            "stopped (default: 10x the fidelity's expected time)"),
    unsafe_no_jail: bool = typer.Option(False, "--unsafe-no-jail", help="where the jail cannot start, run the file "
                                        "without it anyway (recorded in the run folder)"),
) -> None:
    """Train the start with one algorithm over N seeds; print held-out results with 95% CIs against the start."""
    import torch

    from poise.algorithms import BUILTINS, builtin_source
    from poise.backends import get_backend, make_spec
    from poise.backends.base import default_timeout_s, sandbox_only_message
    from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation
    from poise.evaluation.fidelity import estimate_s, get_fidelity, minutes
    from poise.isolation import JailUnavailable, choose_isolation
    from poise.report.plots import plot_curves
    from poise.runs import new_run_dir, run_manifest, save_seed, summarize, versus, write_json, write_metrics_csv
    from poise.verify.static import static_check

    try:
        bspec = make_spec(backend, fidelity, backend_config)
        engine = get_backend(bspec)
    except ValueError as e:
        common.fail(str(e))
    steps = engine.steps
    if algorithm in BUILTINS:
        spec = AlgorithmSpec(algorithm)
        source, origin, label = builtin_source(algorithm), f"builtin:{algorithm}", algorithm
    else:
        path = Path(algorithm)
        if not path.exists():
            common.fail(f"{algorithm!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing file")
        if path.is_dir() or path.suffix != ".py":
            common.fail(f"{algorithm} must be a Python file (.py) defining compute_advantages(batch, cfg)")
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            common.fail(f"cannot read {algorithm}: {e}")
        lint = static_check(source, str(path))
        if not lint.ok:
            common.fail(f"{algorithm} cannot be trained:\n" + "\n".join(lint.errors))
        spec = AlgorithmSpec(path.stem, source, str(path))
        origin, label = str(path), path.stem
    try:
        isolation = choose_isolation(algorithm in BUILTINS, unsafe_no_jail)
    except JailUnavailable as e:
        common.fail(str(e))
    if isolation.warning:
        common.err.print(f"[bold yellow]{escape(isolation.warning)}[/]")
    spec = dataclasses.replace(spec, jailed=isolation.jailed)
    if bspec.name != "tiny" and _literal_config(source).get("dynamic_sampling"):
        common.fail(sandbox_only_message(label, bspec.name))
    timeout = timeout or default_timeout_s(engine, threads)
    seed_list = list(range(seed_offset, seed_offset + seeds))
    torch.set_num_threads(threads)

    run = new_run_dir(out, f"{label}-{bspec.label}")
    fid_dict = get_fidelity(bspec.fidelity).to_dict() if bspec.name == "tiny" else {"name": bspec.label}
    write_json(run / "config.json", {**run_manifest(label, origin, source, fid_dict, seed_list, bspec.to_dict()),
                                     "jailed": isolation.jailed, "isolation_warning": isolation.warning,
                                     "timeout_s": timeout})
    (run / "algorithm.py").write_text(source)
    common.console.print(f"[bold]poise train[/] {escape(label)} · {bspec.describe} · seeds {seed_list} → "
                         f"{escape(str(run))}", soft_wrap=True)

    results, failures = [], []
    try:
        with common.progress() as progress:
            sft_task = None

            def sft_prog(i, n, loss):
                nonlocal sft_task
                if sft_task is None:
                    what = "SFT warm start" if bspec.name == "tiny" else "preparing the model"
                    sft_task = progress.add_task(f"{what} (once, cached)", total=n, info="")
                progress.update(sft_task, completed=i, info=f"loss {loss:.3f}" if loss == loss else "")

            try:
                engine.prepare(sft_prog)
            except ValueError as e:
                common.fail(str(e))
            start = _start_metrics(engine, seed_list, progress)
            expected = estimate_s(engine.expected_s(threads), len(seed_list), threads)
            progress.console.print(f"estimate: about {minutes(expected)} for "
                                   f"{len(seed_list)} seed(s) (measured on 2 idle cores; refined after the first steps)")
            every = progress.add_task("all seeds", total=len(seed_list) * steps, info="")
            first: list[float] = []  # times of the first seed's first steps

            def measure(i: int) -> None:
                first.append(time.time())
                k = min(5, steps) - 1
                if i == k and k > 0:
                    step_s = (first[-1] - first[0]) / k
                    left = estimate_s(bspec.label, len(seed_list), step_s=step_s, steps=steps) - step_s * (k + 1)
                    progress.console.print(f"measured: {step_s:.2f} s a training step here, so about {minutes(left)} "
                                           f"left in all")
            for s in seed_list:
                task = progress.add_task(escape(f"{label} seed {s}"), total=steps, info="")

                def on_step(i, row, task=task, s=s):
                    if s == seed_list[0] and len(first) < steps:
                        measure(i)
                    progress.advance(every)
                    progress.update(task, completed=i + 1,
                                    info=f"acc {row['accuracy']:.2f} valid {row['validity']:.2f} "
                                         f"len {row['response_length']:.0f}")
                t0 = time.time()
                res = run_evaluation(spec, bspec, s, threads, on_step, timeout_s=timeout)
                if isinstance(res, EvalFailure):
                    progress.update(task, info="[red]failed[/]")
                    failures.append(res)
                    if res.kind == "load":  # the same file fails the same way on every seed
                        break
                    continue
                progress.update(task, completed=steps,
                                info=f"Overall {res.metrics['overall']:.1f} ({time.time() - t0:.0f}s)")
                results.append(res)
                save_seed(run, res)
    except KeyboardInterrupt:  # Ctrl-C: say what is kept, as `poise discover` does
        done = ", ".join(str(r.seed) for r in results)
        kept = f"seed(s) {done} finished, saved as seed_N.json in {run}" if results else f"no seed finished ({run})"
        common.err.print(f"[yellow]stopped.[/] {escape(kept)}; the others can be trained in a run of their own "
                         f"with --seed-offset", soft_wrap=True)
        raise typer.Exit(130) from None

    for f in failures:
        head = {"load": "the algorithm file is unusable", "candidate": "the algorithm failed during training",
                "crash": "the evaluation crashed", "timeout": "the evaluation timed out",
                "memory": "the evaluation ran out of memory",
                "internal": "internal error in poise (please report it)"}.get(f.kind, f.kind)
        common.err.print(f"[bold red]seed {f.seed}: {head}[/]\n{escape(f.message)}")
    if not results:
        write_json(run / "failures.json", [f.__dict__ for f in failures])
        raise typer.Exit(2)

    summary = {"algorithm": summarize(results), "sft_start": summarize(start), "vs_start": versus(results, start),
               "failures": [f.__dict__ for f in failures]}
    write_json(run / "summary.json", summary)
    write_metrics_csv(run / "metrics.csv", [(label, r) for r in results] + [("sft_start", r) for r in start])
    plot_curves({label: [r.trajectory for r in results]}, run / "curves.png")
    _print_table(label, summary, len(results), engine.tiers, "SFT start" if bspec.name == "tiny" else "start")
    for what, name in (("curves", "curves.png"), ("metrics", "metrics.csv"), ("summary", "summary.json")):
        common.console.print(f"{what}: {escape(str(run / name))}", soft_wrap=True, highlight=False)
    if failures:
        raise typer.Exit(1)


def _print_table(label: str, summary: dict, n: int, tiers, start: str) -> None:
    from poise.evaluation.keys import SANDBOX_RANK_ON
    from poise.evaluation.metrics import CI

    a, b, d = summary["algorithm"], summary["sft_start"], summary["vs_start"]
    how = "paired over matched seeds" if d["overall"].get("method") == "paired" else "Welch"
    t = Table(title=f"held-out results, mean ± 95% CI over {n} seed(s); Δ: {how} 95% CI of {label} - start")
    t.add_column("tier")
    t.add_column("metric")
    t.add_column(start, justify="right")
    t.add_column(label, justify="right", style="bold")
    t.add_column("Δ", justify="right")

    def fmt(x):
        return str(CI(x["mean"], x["lo"], x["hi"], x["n"], x["std"]))

    def delta(x):
        return f"{x['mean']:+.1f}" + ("" if x["lo"] != x["lo"] else f" ± {(x['hi'] - x['lo']) / 2:.1f}")
    for tier in tiers:
        metric = "greedy acc" if tier.metric == "greedy" else "pass@k"
        t.add_row(tier.name, metric, fmt(b["tiers"][tier.name]), fmt(a["tiers"][tier.name]), delta(d[tier.name]))
    t.add_row("hard tiers", "pass@1", fmt(b["hard_pass@1"]), fmt(a["hard_pass@1"]), delta(d["hard_pass@1"]))
    t.add_row("Overall", "weighted", fmt(b["overall"]), fmt(a["overall"]), delta(d["overall"]), style="bold")
    if SANDBOX_RANK_ON in a and SANDBOX_RANK_ON in b:  # what a discovery run on the sandbox ranks accuracy on
        k = SANDBOX_RANK_ON.split("@")[1]
        t.add_row(SANDBOX_RANK_ON, f"pass@{k} tiers", fmt(b[SANDBOX_RANK_ON]), fmt(a[SANDBOX_RANK_ON]),
                  delta(d[SANDBOX_RANK_ON]))
    t.add_row("length", "tokens", fmt(b["length"]), fmt(a["length"]), delta(d["length"]))
    t.add_row("validity", "%", fmt(b["validity"]), fmt(a["validity"]), delta(d["validity"]))
    common.console.print(t)
    for key, name in (("overall", "Overall"), (SANDBOX_RANK_ON, SANDBOX_RANK_ON)):
        if key not in d:
            continue
        o = d[key]
        if o["lo"] != o["lo"]:  # nan: one seed
            common.console.print(f"{name} {label} - start: {o['mean']:+.1f}; train 2 or more seeds for an interval")
            continue
        said = ("above its start" if o["lo"] > 0 else "below its start" if o["hi"] < 0
                else "not separated from its start (the interval contains 0)")
        test = (f"paired 95%, {o['n']} matched seeds" if o.get("method") == "paired"
                else f"Welch 95%, {a[key]['n']} and {b[key]['n']} seeds")
        common.console.print(f"{name} {label} - start: {o['mean']:+.1f} [{o['lo']:+.1f}, {o['hi']:+.1f}] "
                             f"({test}): {said}")


def _literal_config(source: str) -> dict:
    """The source's CONFIG as written, when it is a dict JSON can hold ({} otherwise: the worker, which loads it,
    refuses what this cannot see)."""
    from poise.verify.static import config_literal

    try:
        value = json.loads(config_literal(source))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
