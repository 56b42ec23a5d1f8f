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
    assert summary["algorithm"]["hard_pass@1"]["n"] == 2
    header = (run / "curves_seed_0.csv").read_text().splitlines()[0].split(",")
    for k in ["reward", "accuracy", "validity", "entropy", "response_length", "kl", "clip_frac", "grad_norm"]:
        assert k in header


@pytest.mark.parametrize("body, words", [
    ("def compute_advantages(batch, cfg)\n    return batch.mask\n", ["syntax error", "line 1"]),
    ("def compute_advantages(batch):\n    return batch.mask\n", ["wrong signature", "compute_advantages(batch, cfg)"]),
    ("def advantages(batch, cfg):\n    return batch.mask\n", ["no `compute_advantages(batch, cfg)`"]),
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
