"""Where the jail cannot start: code poise did not write is refused with the problem and the fix;
--unsafe-no-jail runs it anyway and every view says so; poise's own code runs with a warning."""

import json
import subprocess
import sys

import pytest

import poise.isolation.hook as hook
from poise.isolation.jail import JailStatus
from poise.isolation.hook import JailUnavailable, choose_isolation

NO_JAIL = {"POISE_BWRAP": "/nonexistent/bwrap"}


@pytest.fixture
def no_jail(monkeypatch):
    monkeypatch.setattr(hook, "jail_status", lambda: JailStatus(False, "user namespaces are disabled here"))


def test_choose_isolation(no_jail):
    with pytest.raises(JailUnavailable, match="user namespaces are disabled here.*--unsafe-no-jail"):
        choose_isolation(poise_wrote_it=False)
    own = choose_isolation(poise_wrote_it=True)
    assert not own.jailed and own.warning.startswith("warning:") and "poise's own" in own.warning
    unsafe = choose_isolation(poise_wrote_it=False, unsafe_no_jail=True)
    assert not unsafe.jailed and unsafe.warning.startswith("UNSAFE")


def test_with_a_jail_everything_is_jailed(jail):
    assert choose_isolation(False).jailed and choose_isolation(True).jailed


def train(tmp_path, *args, env=None):
    import os
    return subprocess.run([sys.executable, "-m", "poise.cli", "train", *args, "-f", "smoke", "-o",
                           str(tmp_path / "runs"), "--threads", "1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_poise_train_refuses_a_file_without_the_jail_and_runs_it_when_told(tmp_path, smoke_policy):
    f = tmp_path / "mine.py"
    f.write_text("from poise.algorithms.base import to_tokens\n\ndef compute_advantages(batch, cfg):\n"
                 "    return to_tokens(batch.rewards - batch.rewards.mean(), batch.mask)\n")
    r = train(tmp_path, "-a", str(f), env=NO_JAIL)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "POISE_BWRAP=/nonexistent/bwrap" in out and "--unsafe-no-jail" in out, out
    assert not (tmp_path / "runs").exists()
    r = train(tmp_path, "-a", str(f), "--unsafe-no-jail", env=NO_JAIL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "UNSAFE" in " ".join(r.stderr.split())
    (run,) = (tmp_path / "runs").iterdir()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["jailed"] is False and cfg["isolation_warning"].startswith("UNSAFE")
    seed = json.loads((run / "seed_0.json").read_text())
    assert "bubblewrap" not in seed["info"]["isolation"] and "hook-process" in seed["info"]["isolation"]


def test_poise_train_runs_a_builtin_without_the_jail_with_a_warning(tmp_path, smoke_policy):
    r = train(tmp_path, "-a", "grpo", env=NO_JAIL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: the jail cannot start" in " ".join(r.stderr.split())


def test_a_loop_with_an_llm_implementer_needs_the_jail_or_the_unsafe_flag(tmp_path, no_jail, smoke_policy):
    from poise.agents.roles import AgentsConfig
    from poise.discovery.loop import DiscoverConfig, Loop
    from poise.report.html import render
    from poise.report.view import RunView

    agents = AgentsConfig(llm="openai:fake@http://127.0.0.1:9/v1", key_env="POISE_FAKE_KEY")
    import os
    os.environ["POISE_FAKE_KEY"] = "x"
    try:
        cfg = DiscoverConfig(budget=1, fidelity="smoke", reeval_top=0, threads=1, agents=agents)
        with pytest.raises(JailUnavailable):
            Loop(tmp_path / "a", cfg)
        loop = Loop(tmp_path / "b", DiscoverConfig(**{**cfg.__dict__, "unsafe_no_jail": True}))
        loop.ensure_baseline()
        loop.close()
    finally:
        del os.environ["POISE_FAKE_KEY"]
    view = RunView.load(tmp_path / "b")
    assert "WITHOUT the jail" in view.unjailed_note and "--unsafe-no-jail was given" in view.unjailed_note
    assert "WITHOUT the jail" in render(view)
    status = subprocess.run([sys.executable, "-m", "poise.cli", "status", str(tmp_path / "b")], capture_output=True,
                            text=True, timeout=120)
    assert "WITHOUT the jail" in " ".join(status.stdout.split())
    assert "bubblewrap" not in json.dumps(view.baseline.entry.verification["isolation"])


def test_an_offline_loop_without_the_jail_runs_with_the_warning_recorded(tmp_path, no_jail, smoke_policy):
    from poise.discovery.loop import DiscoverConfig, Loop
    from poise.report.view import RunView

    messages = []

    class Events:
        def message(self, text):
            messages.append(text)

    loop = Loop(tmp_path, DiscoverConfig(budget=1, fidelity="smoke", reeval_top=0, threads=1), Events())
    loop.ensure_baseline()
    loop.close()
    assert any(m.startswith("warning: the jail cannot start") for m in messages), messages
    view = RunView.load(tmp_path)
    assert "only poise's own code ran" in view.unjailed_note
    assert view.baseline.entry.verification["ok"]
