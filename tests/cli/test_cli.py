import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def poise(*args, cwd):
    env = {**os.environ}
    return subprocess.run([sys.executable, "-m", "poise.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_algorithms_lists_every_builtin(tmp_path):
    from poise.algorithms import BUILTINS
    r = poise("algorithms", cwd=tmp_path)
    assert r.returncode == 0
    for name in BUILTINS:
        assert name in r.stdout


def test_train_writes_a_complete_run_folder(tmp_path, smoke_policy):
    r = poise("train", "-a", "grpo", "-f", "smoke", "-n", "2", "-o", str(tmp_path / "runs"), "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = list((tmp_path / "runs").iterdir())
    for f in ["config.json", "algorithm.py", "seed_0.json", "seed_1.json", "curves_seed_0.csv", "metrics.csv",
              "summary.json", "curves.png"]:
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algorithm"]["seeds"] == [0, 1] and summary["algorithm"]["overall"]["n"] == 2
    assert "Overall" in r.stdout and "SFT start" in r.stdout and "hard tiers" in r.stdout
    # a time estimate before the run, refined from the first training steps, and a bar over all seeds
    assert "estimate: about" in r.stdout and "measured:" in r.stdout and "s a training step here" in r.stdout
    assert "all seeds" in r.stdout
    assert summary["algorithm"]["hard_pass@1"]["n"] == 2
    overall = {}  # per arm, from metrics.csv: the difference the summary and the verdict line report
    for row in (run / "metrics.csv").read_text().splitlines()[1:]:
        name, _, tier, _, score = row.split(",")[:5]
        if tier == "overall":
            overall.setdefault(name, []).append(float(score))
    d = summary["vs_start"]["overall"]
    assert d["mean"] == pytest.approx(sum(overall["grpo"]) / 2 - sum(overall["sft_start"]) / 2, abs=1e-3)
    assert d["lo"] < d["mean"] < d["hi"] or d["lo"] == d["hi"]
    assert f"Overall grpo - start: {d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]" in " ".join(r.stdout.split())
    # the start is scored at the algorithm's seeds with the same noise: the interval is paired, and says so
    assert d["method"] == "paired" and "(paired 95%, 2 matched seeds)" in " ".join(r.stdout.split())
    # what a discovery run ranks accuracy on is reported beside the paper's Overall
    from poise.evaluation.keys import SANDBOX_RANK_ON

    assert summary["algorithm"][SANDBOX_RANK_ON]["n"] == 2 and SANDBOX_RANK_ON in r.stdout
    header = (run / "curves_seed_0.csv").read_text().splitlines()[0].split(",")
    for k in ["reward", "accuracy", "validity", "entropy", "response_length", "kl", "clip_frac", "grad_norm"]:
        assert k in header


@pytest.mark.parametrize("body, words", [
    ("def compute_advantages(batch, cfg)\n    return batch.mask\n", ["syntax error", "line 1"]),
    ("def compute_advantages(batch):\n    return batch.mask\n", ["wrong signature", "compute_advantages(batch, cfg)"]),
    ("def advantages(batch, cfg):\n    return batch.mask\n", ["no top-level `def compute_advantages(batch, cfg)`"]),
    ("def compute_advantages(batch, cfg):\n    return batch.mask * float('nan')\n", ["non-finite", "NaN"]),
    ("def compute_advantages(batch, cfg):\n    return batch.mask[None]\n", ["returned shape"]),
])
def test_a_bad_algorithm_file_gets_a_clear_error_not_a_traceback(tmp_path, smoke_policy, body, words):
    f = tmp_path / "cand.py"
    f.write_text(body)
    r = poise("train", "-a", str(f), "-f", "smoke", "-o", str(tmp_path / "runs"), "--threads", "1", cwd=tmp_path)
    assert r.returncode == 2
    out = " ".join((r.stdout + r.stderr).split())
    assert "Traceback" not in out
    for w in words:
        assert w in out, (w, out)


def test_unknown_algorithm_and_fidelity_are_clear_errors(tmp_path):
    r = poise("train", "-a", "nope", "-f", "smoke", cwd=tmp_path)
    assert r.returncode == 2 and "neither a built-in" in r.stderr and "grpo" in r.stderr
    r = poise("train", "-a", "grpo", "-f", "huge", cwd=tmp_path)
    assert r.returncode == 2 and "unknown fidelity" in r.stderr
    d = tmp_path / "dir.py"
    d.mkdir()
    r = poise("train", "-a", str(d), cwd=tmp_path)
    assert r.returncode == 2 and "must be a Python file" in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing is written for a refused command


def test_llm_options_are_checked_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-for-option-checks")
    cases = [
        (["--role", "critic=offline"], "unknown role 'critic'"),
        (["--role", "reflector"], "expected ROLE=MODEL"),
        (["--llm", "gemini:pro"], "unknown provider 'gemini'"),
        (["--llm", "openai:m@http://127.0.0.1:9/v1", "--role", "implementer=offline"], "needs an LLM implementer"),
        (["--llm", "openai:gpt-x", "--llm-budget-usd", "1"], "--llm-price"),
        (["--llm", "openai:gpt-x", "--llm-price", "cheap"], "expected IN,OUT"),
        (["--llm-budget-tokens", "100"], "also pass --llm"),
    ]
    for args, words in cases:
        r = poise("discover", "--fidelity", "smoke", "--out", str(tmp_path / "run"), *args, cwd=tmp_path)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
        assert not (tmp_path / "run").exists(), args  # refused before a run folder exists
    env_missing = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "poise.cli", "discover", "--fidelity", "smoke", "--out",
                        str(tmp_path / "run2"), "--llm", "openai:gpt-x", "--budget", "1", "--reeval-top", "0"],
                       cwd=tmp_path, env=env_missing, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "set OPENAI_API_KEY" in r.stderr and "Traceback" not in r.stderr


def test_status_of_a_missing_or_foreign_run_is_a_clear_error(tmp_path):
    r = poise("status", str(tmp_path / "nothing"), cwd=tmp_path)
    assert r.returncode == 2 and "no archive at" in r.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "archive.db").write_text("not a database")
    r = poise("status", str(tmp_path / "bad"), cwd=tmp_path)
    assert r.returncode == 2 and "not a poise archive" in r.stderr


# -- the views on a run: status, show, export, report ------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.report import fake_run
    root = tmp_path_factory.mktemp("views")
    return {"fake": fake_run.build(root / "fake"), "shipped": fake_run.shipped(root / "shipped")}


def _wide(*args, cwd):
    env = {**os.environ, "COLUMNS": "220"}
    return subprocess.run([sys.executable, "-m", "poise.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_status_shows_candidates_front_confirmation_and_budget(runs, tmp_path):
    r = _wide("status", str(runs["shipped"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "DACE-VM-LOO-GRPO" in r.stdout and "92.1 ± 1.7 (5)" in r.stdout  # GRPO on 5 fresh seeds
    assert "discovery" in r.stdout and "Pareto front (id*): #8 DACE-VM-LOO-GRPO, #7 CL-LOO-GRPO, #4 DACE-GRPO" in r.stdout
    assert "budget: trained 8/8 · proposals 8/24" in r.stdout and "±1.7 (5 fresh seeds)" in r.stdout
    assert "run: finished" in r.stdout  # an archive from before the end mark: its budget is spent, nothing in flight
    assert "evaluations ran on: local ×" in r.stdout  # from before the Ray executor: the local pool
    r = _wide("status", str(runs["fake"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in ("rejected", "failed", "proposed", "confirmation on fresh seeds continues", "advantages are NaN",
                 "1 agent step(s) failed",
                 "run: stopped: resume with `poise discover --resume --out"):
        assert text in r.stdout, text
    narrow = subprocess.run([sys.executable, "-m", "poise.cli", "status", str(runs["shipped"])], cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "80"}, capture_output=True, text=True, timeout=600)
    lines = narrow.stdout.splitlines()
    assert narrow.returncode == 0 and max(len(ln) for ln in lines) <= 80
    # one row, unbroken; not a discovery under the minimum effect (its length cut, -0.8 [-1.5, -0.0] tokens, clears
    # zero but not 5% of GRPO's 44.8), which the line under the table states
    assert any("DACE-VM-LOO-GRPO" in ln and "93.6±1.2" in ln and " no" in ln for ln in lines)
    assert "a discovery needs, over the whole 95% interval: Δ length < -2.2 tokens (5% of GRPO's)" in " ".join(narrow.stdout.split())


def test_show_prints_proposal_diff_verification_reflection_and_writes_the_plot(runs, tmp_path):
    r = _wide("show", str(runs["shipped"]), "8", "--plot", str(tmp_path / "c8.png"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "#8 DACE-VM-LOO-GRPO" in r.stdout and "parent #5 DACE-LOO-GRPO" in r.stdout
    assert "hypothesis:" in r.stdout and "Verification: passed" in r.stdout and "claim:" in r.stdout
    assert "--- #5 DACE-LOO-GRPO" in r.stdout and "+++ #8 DACE-VM-LOO-GRPO" in r.stdout  # the code as a diff
    assert "Reflection: keep: " in r.stdout and "Confirmation (5 fresh seeds)" in r.stdout  # the verdict once
    assert (tmp_path / "c8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _wide("show", str(runs["fake"]), "4", cwd=tmp_path)  # rejected: no curves, but the reasons
    assert r.returncode == 0 and "verification failed after 3 attempts" in r.stdout and "attempt 1" in r.stdout
    assert "curves" not in r.stdout.split("Reflection")[-1]
    r = _wide("show", str(runs["fake"]), "3", cwd=tmp_path)  # text that looks like terminal markup
    assert r.returncode == 0, r.stderr
    assert "mechanism: a [/] b" in r.stdout and "A[i] = [bold]r[/bold]_i" in r.stdout


def test_export_writes_a_file_that_poise_train_runs(runs, tmp_path, smoke_policy):
    r = _wide("export", str(runs["shipped"]), "8", "-o", str(tmp_path / "vm.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "vm.py").read_text()
    assert "DACE-VM-LOO-GRPO: exported from a poise discovery run" in text
    r2 = _wide("export", str(runs["shipped"]), "8", "-o", str(tmp_path / "vm.py"), cwd=tmp_path)
    assert r2.returncode == 2 and "exists; pass --force" in r2.stderr
    r3 = poise("train", "-a", str(tmp_path / "vm.py"), "-f", "smoke", "-o", str(tmp_path / "runs"), "--threads", "1",
               cwd=tmp_path)
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert "Overall" in r3.stdout


def test_export_default_name_and_unimplemented_entry(runs, tmp_path):
    r = _wide("export", str(runs["fake"]), "1", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "av_grpo.py").is_file()
    r = _wide("export", str(runs["fake"]), "6", cwd=tmp_path)  # proposed, never implemented
    assert r.returncode == 2 and "has no code yet" in r.stderr


def test_report_writes_one_html_file(runs, tmp_path):
    out = tmp_path / "r.html"
    r = _wide("report", str(runs["shipped"]), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith("<!DOCTYPE html>") and "9 entries" in r.stdout
    r = _wide("report", str(runs["shipped"]), "-o", str(tmp_path / "r.pdf"), cwd=tmp_path)
    assert r.returncode == 2 and "ending in .html" in r.stderr


@pytest.mark.parametrize("cmd", [["status"], ["show", "ID"], ["export", "ID"], ["report"]])
def test_every_view_gives_a_clear_error_on_a_missing_or_corrupt_run_or_unknown_id(runs, tmp_path, cmd):
    def call(run, entry="1"):
        args = [cmd[0], str(run)] + ([entry] if len(cmd) > 1 else [])
        return _wide(*args, cwd=tmp_path)

    r = call(tmp_path / "missing")
    assert r.returncode == 2 and "no archive at" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = call(tmp_path / "empty")
    assert r.returncode == 2 and "holds no archive.db" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (runs["shipped"] / "archive.db").read_bytes()
    (bad / "archive.db").write_bytes(data[:4096] + b"\0" * 4096)  # a valid header, garbage after it
    r = call(bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "damaged" in r.stderr or "not a usable poise archive" in r.stderr, r.stderr
    if len(cmd) > 1:
        r = call(runs["fake"], "99")
        assert r.returncode == 2 and "no candidate #99" in r.stderr and "ids are 0..6" in r.stderr


def test_resume_keeps_the_stored_budget_and_says_what_a_named_option_changes(tmp_path, monkeypatch):
    """`poise discover --resume` with no --budget keeps the run's budget (not the command's default 8);
    `--budget 5` changes it and says so. The loop itself is stopped at once (Ctrl-C), as a user might."""
    from typer.testing import CliRunner

    from poise.cli import app
    from poise.discovery.loop import DiscoverConfig, Loop

    out = tmp_path / "run"
    Loop(out, DiscoverConfig(budget=3, fidelity="smoke", threads=1)).close()

    def stop(self):  # what Loop.run does on Ctrl-C: close the archive, let the interrupt through
        self.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(Loop, "run", stop)
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(app, ["discover", "--resume", "--out", str(out)])
    assert r.exit_code == 130, r.output
    assert "budget 3" in r.output and "resumed with the run's stored settings" in r.output
    # the baseline, 3 candidates, 4 racing seeds (0.4 of 3 candidates x 2 extra seeds, and the baseline's own 2:
    # raced candidates are compared with it seed by seed), and GRPO and the top 2 on 5 fresh seeds; at smoke's
    # 20 s (x2 at one thread) each
    assert "estimate: about 15 min for 23 evaluations (about 4 of them racing seeds;" in " ".join(r.output.split()), \
        r.output
    r = CliRunner().invoke(app, ["discover", "--resume", "--out", str(out), "--budget", "5", "--workers", "1"])
    assert r.exit_code == 130 and "resumed with changes: budget 3 -> 5" in r.output, r.output
    r = CliRunner().invoke(app, ["discover", "--resume", "--out", str(out), "--fidelity", "standard"])
    assert r.exit_code == 2 and "--fidelity differs" in " ".join(r.output.split()), r.output


def test_progress_on_resume_counts_the_candidate_that_was_in_flight_once(tmp_path):
    """A run stopped with one candidate training resumes at 'trained 1/3', and that candidate's end makes
    it 2/3 (not 3/3: it was counted once when the run resumed and once when it finished)."""
    from rich.progress import Progress

    from poise.algorithms import builtin_source
    from poise.cli.discover import _DiscoverEvents
    from poise.discovery.loop import DiscoverConfig, Loop

    loop = Loop(tmp_path, DiscoverConfig(budget=3, fidelity="smoke", threads=1))
    a = loop.archive
    base = a.add_entry("GRPO", builtin_source("grpo"), {"name": "GRPO"}, [], 0)
    done = a.add_entry("A", builtin_source("grpo"), {"name": "A"}, [base], 1)
    flight = a.add_entry("B", builtin_source("grpo"), {"name": "B"}, [base], 1)
    for i, statuses in ((done, ("verified", "evaluating", "failed")), (flight, ("verified", "evaluating"))):
        for st in statuses:
            a.set_status(i, st, "NaN at step 2" if st == "failed" else "")
    with Progress(disable=True) as p:
        ev = _DiscoverEvents(p, steps=3)
        ev.start(loop)
        assert p.tasks[0].completed == 1 and p.tasks[0].total == 3
        ev.eval_started(a.get(flight), 0, "search")
        ev.eval_finished(a.get(flight), 0, True, "Overall 1.0")
        assert p.tasks[0].completed == 2
    loop.close()


def _narrow_console(monkeypatch, width=80):
    import io

    from rich.console import Console

    from poise.cli import common
    c = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    monkeypatch.setattr(common, "console", c)
    return c


def test_the_confirmation_table_keeps_whole_verdicts_and_names_at_80_columns(monkeypatch):
    from poise.cli.discover import _print_discovery
    from poise.discovery.confirm import Discovery
    from poise.discovery.loop import RunSummary

    ci = {"mean": 93.6, "lo": 92.4, "hi": 94.8, "n": 5, "std": 1.0}
    d = {"mean": -0.8, "lo": -1.5, "hi": -0.0, "n": 5, "std": 0.3}
    disc = Discovery(8, "DACE-VM-LOO-GRPO-WITH-A-LONG-NAME", [1001, 1002], ci, ci, ci, d, d, "not confirmed", "r",
                     "Δ length < -2.2 tokens (5% of GRPO's)")
    s = RunSummary("/runs/x", "objective", 8, 0, 0, [(8, "DACE-VM-LOO-GRPO-WITH-A-LONG-NAME", 1.0)], [disc],
                   {"overall": ci, "length": ci, "hard_pass1": ci, "seeds": 5})
    c = _narrow_console(monkeypatch)
    _print_discovery(s)
    out = c.file.getvalue()
    assert max(len(ln) for ln in out.splitlines()) <= 80
    assert "not confirmed" in out and "…" not in out  # whole, not "not confirm…"
    assert "DACE-VM-LOO-GRPO-WITH-A-LONG-NAME" in "".join(out.split())  # folded at worst, never cut
    assert "-0.8±0.8" in out  # the differences stay: they carry the verdict


def test_progress_at_80_columns_keeps_counts_and_times(monkeypatch):
    import re

    from poise.cli import common
    c = _narrow_console(monkeypatch)
    p = common.progress()
    p.add_task("#12 DACE-VM-LOO-GRPO seed 1001 on the confirmation set", total=50, completed=10,
               info="acc 0.52 valid 0.91 len 60 and a long tail of text that does not fit")
    c.print(p.make_tasks_table(p.tasks))
    line = c.file.getvalue().splitlines()[0]
    assert len(line) <= 80 and "10/50" in line and re.search(r"\d:\d\d:\d\d\s+\S:\S\S:\S\S$", line), line


def test_output_to_a_pipe_is_not_cut_to_80_columns(runs, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "poise.cli", "status", str(runs["shipped"])], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert max(len(ln) for ln in r.stdout.splitlines()) > 80 and "not confirmed" in r.stdout


def test_help_shows_no_type_beside_a_flag(tmp_path):
    r = poise("discover", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--resume" in r.stdout and "--help" in r.stdout
    assert "<bool>" not in r.stdout


def test_ctrl_c_of_train_keeps_the_finished_seeds_and_says_where(tmp_path, smoke_policy):
    import signal
    import time

    cmd = [sys.executable, "-m", "poise.cli", "train", "-a", "grpo", "-f", "smoke", "-n", "6", "-o",
           str(tmp_path / "runs"), "--threads", "1"]
    # SIGINT's default action, as a terminal gives it: a shell that started the suite in the background leaves it
    # ignored, and children inherit that
    p = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob("*/seed_0.json")):
        assert p.poll() is None and time.time() < deadline, p.stderr.read().decode() if p.poll() else "too slow"
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    assert p.wait(timeout=60) == 130
    err = " ".join(p.stderr.read().decode().split())
    (run,) = list((tmp_path / "runs").iterdir())
    kept = sorted(int(f.stem.split("_")[1]) for f in run.glob("seed_*.json"))
    assert kept and kept[-1] < 5 and not (run / "summary.json").exists()
    assert f"stopped. seed(s) {', '.join(map(str, kept))} finished, saved as seed_N.json in {run}" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("value, words", [
    ("overall@8", ["4 samples a problem", "K <= 4"]),  # smoke scores its sampled tiers from 4 samples
    ("pass@2", ["choose one of", "overall@2"]),
])
def test_discover_refuses_an_accuracy_metric_it_cannot_measure(tmp_path, value, words):
    r = poise("discover", "-f", "smoke", "--budget", "1", "--rank-on", value, "-o", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode != 0
    for w in words:
        assert w in r.stdout + r.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written
