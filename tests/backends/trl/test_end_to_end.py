"""The TRL backend end to end on the CPU, as a user runs it: a small Llama built here, a few steps,
through `poise train` and `poise discover`, with the archive, status and report complete."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

pytest.importorskip("trl")

from poise.evaluation.keys import TRAJECTORY_KEYS  # noqa: E402

CONFIG = """
[model]
name = "random"
hidden = 32
layers = 2
heads = 2
intermediate = 64

[trainer]
steps = 3
prompts_per_step = 2
group_size = 4
micro_batches = 2

[generation]
max_new_tokens = 16

[benchmarks.hard]
source = "tiny-math:aime24"
k = 3
weight = 0.5
limit = 4

[benchmarks.easy]
source = "tiny-math:math500"
metric = "greedy"
weight = 0.5
limit = 8
"""


def poise(*args, cwd):
    return subprocess.run([sys.executable, "-m", "poise.cli", *args], cwd=cwd, env={**os.environ},
                          capture_output=True, text=True, timeout=900)


@pytest.fixture()
def config(tmp_path):
    f = tmp_path / "trl.toml"
    f.write_text(CONFIG)
    return f


def test_train_with_the_trl_backend_writes_a_complete_run(tmp_path, config):
    r = poise("train", "-a", "grpo", "-n", "2", "--backend", "trl", "--backend-config", str(config),
              "-o", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.endswith("grpo-trl")
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["algorithm"]["tiers"]) == ["hard", "easy"] and summary["algorithm"]["overall"]["n"] == 2
    seed = json.loads((run / "seed_0.json").read_text())
    assert seed["fidelity"] == "trl" and len(seed["trajectory"]) == 3
    assert set(TRAJECTORY_KEYS) <= set(seed["trajectory"][0])
    assert seed["info"]["isolation"] and seed["info"]["hook_calls"] > 0  # the candidate ran in its hook process
    assert json.loads((run / "config.json").read_text())["backend"]["config"]["trainer"]["steps"] == 3
    assert "hard" in r.stdout and "easy" in r.stdout and "backend trl" in r.stdout
    assert "{'loss'" not in r.stdout  # TRL's own log lines stay out of the user's terminal


def test_discover_with_the_trl_backend_archives_and_reports(tmp_path, config):
    out = tmp_path / "run"
    # the confirmation on the trl backend is the cascade's test below (its promoted results are trl/confirm)
    r = poise("discover", "--backend", "trl", "--backend-config", str(config), "--budget", "1", "--race-seeds", "1",
              "--reeval-seeds", "0", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(out / "archive.db")
    stored = json.loads(json.loads(db.execute("select value from meta where key = 'config'").fetchone()[0]))
    assert stored["backend"] == "trl" and stored["backend_config"]["model"]["name"] == "random"
    fids = {f for (f,) in db.execute("select fidelity from evaluations")}
    assert fids == {"trl"}
    statuses = dict(db.execute("select id, status from entries"))
    assert statuses[0] == "evaluated" and len(statuses) >= 2
    db.close()
    s = poise("status", str(out), cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    rep = poise("report", str(out), "-o", str(tmp_path / "report.html"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "report.html").read_text()
    assert "AV-GRPO" in html or "VM-GRPO" in html
    assert "backend trl" in s.stdout

    # a resume keeps the backend; another backend config is refused, naming both
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("steps = 3", "steps = 4"))
    again = poise("discover", "--resume", "--out", str(out), "--backend", "trl", "--backend-config", str(other),
                  cwd=tmp_path)
    assert again.returncode != 0 and "--backend-config differs" in again.stdout + again.stderr
    tiny = poise("discover", "--resume", "--out", str(out), "--backend", "tiny", cwd=tmp_path)
    assert tiny.returncode != 0 and "--backend differs" in tiny.stdout + tiny.stderr


def test_the_same_config_and_seed_give_the_same_numbers():
    import tomllib

    from poise.algorithms import load_algorithm
    from poise.backends import BackendSpec, get_backend

    small = tomllib.loads(CONFIG)
    small["trainer"]["steps"] = 2
    small["benchmarks"]["easy"]["limit"] = 2
    backend = get_backend(BackendSpec("trl", "trl", small))
    a = backend.evaluate(load_algorithm("dapo"), 3)
    b = backend.evaluate(load_algorithm("dapo"), 3)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # timings differ
    assert strip(a.trajectory) == strip(b.trajectory) and a.metrics == b.metrics
    assert a.trajectory[0]["entropy"] > 0 and a.metrics["tiers"]["hard"]["samples"] == 3
    assert a.metrics["tiers"]["hard"]["metric"] == "pass@3" and "pass@3" in a.metrics["tiers"]["hard"]


def test_dynamic_sampling_is_refused_before_anything_is_prepared(tmp_path, config):
    algo = tmp_path / "dapo_ds.py"
    algo.write_text("from poise.algorithms.base import group_mean, to_tokens\n"
                    "CONFIG = {'dynamic_sampling': 2}\n"
                    "def compute_advantages(batch, cfg):\n"
                    "    r = batch.rewards.float()\n"
                    "    return to_tokens(r - group_mean(r, batch.group_ids), batch.mask)\n")
    r = poise("train", "-a", str(algo), "-n", "1", "--backend", "trl", "--backend-config", str(config),
              "-o", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode != 0
    assert "dynamic_sampling" in r.stderr + r.stdout and "sandbox backend only" in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists()  # refused before a run folder, a model load or a start's scoring
