"""The closed loop at smoke fidelity: real proposer, real sandboxed verifier and evaluation workers,
real SQLite. Smoke numbers are not science; these tests check the machinery."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from poise.agents import offline
from poise.discovery.archive import Archive
from poise.discovery.loop import DiscoverConfig, Loop


def _cfg(**kw):
    base = dict(budget=2, fidelity="smoke", reeval_top=1, reeval_seeds=(1001, 1002), threads=1, verify_timeout_s=8,
                race_seeds=1)  # racing has its own test below
    base.update(kw)
    return DiscoverConfig(**base)


def test_a_run_leaves_a_complete_archive(tmp_path):
    summary = Loop(tmp_path, _cfg(budget=3)).run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    entries = a.entries()
    trained = [e for e in entries if e.id != 0 and e.status in ("evaluated", "failed")]
    assert len(trained) == 3 and summary.evaluated + summary.failed == 3
    assert entries[0].name == "GRPO" and entries[0].status == "evaluated"
    ids = {e.id for e in entries}
    for e in trained:
        assert e.parent_ids and e.parent_ids[0] in ids  # lineage
        assert e.generation == a.get(e.parent_ids[0]).generation + 1
        assert e.code and "def compute_advantages" in e.code
        assert e.verification["ok"] and e.verification["checks"]  # the verifier's report
        assert e.proposal["hypothesis"] and e.proposal["claims"]
        assert e.reflection and e.reflection["diagnosis"]
        if e.status == "evaluated":
            ev = a.evaluations(e.id, "search")
            assert len(ev) == 1 and len(ev[0].trajectory) == 3  # smoke: 3 RL steps, all curves kept
    # the best candidate and the baseline were re-evaluated on the fresh seeds, on the confirmation set
    best = summary.best_search[0][0]
    for eid in (0, best):
        seeds = sorted(v.seed for v in a.evaluations(eid, "reeval"))
        assert seeds == [1001, 1002]
    assert summary.confirmed and summary.confirmed[0].entry_id == best
    assert (tmp_path / "summary.json").exists()
    assert [ev for ev in a.events() if ev.kind == "select"]
    assert not [ev for ev in a.events() if ev.kind == "race"]  # racing off (race_seeds=1): one seed each
    from poise.report.view import RunView
    assert RunView.load(tmp_path).state() == "finished"


def test_a_second_run_in_the_same_folder_needs_resume(tmp_path):
    Loop(tmp_path, _cfg(budget=1, reeval_top=0)).run()
    with pytest.raises(Exception, match="--resume"):
        Loop(tmp_path, _cfg(budget=1))
    with pytest.raises(Exception, match="directive"):
        Loop(tmp_path, _cfg(budget=1, directive="accurate and concise"), resume=True)


def test_a_resumed_run_keeps_every_stored_setting_unless_it_is_named(tmp_path):
    """`--resume` without options continues the run as it was (the command line's default budget of 8 must
    not replace a stored 3); a named setting changes and is recorded; a named incoherent one is refused."""
    from poise.agents.roles import AgentsConfig

    Loop(tmp_path, _cfg(budget=3, reeval_seeds=(1001, 1002, 1003), agents=AgentsConfig(budget_tokens=100))).close()
    cli_defaults = DiscoverConfig()  # budget 8, standard fidelity, 5 fresh seeds, offline agents
    loop = Loop(tmp_path, cli_defaults, resume=True, given=frozenset())
    assert (loop.cfg.budget, loop.cfg.fidelity, loop.cfg.threads, loop.cfg.race_seeds) == (3, "smoke", 1, 1)
    assert loop.cfg.agents.budget_tokens == 100 and loop.changes == []
    loop.close()
    loop = Loop(tmp_path, dataclasses.replace(cli_defaults, budget=5, agents=AgentsConfig(budget_tokens=900)),
                resume=True, given=frozenset({"budget", "agents.budget_tokens"}))
    assert loop.cfg.budget == 5 and loop.cfg.fidelity == "smoke" and loop.cfg.agents.budget_tokens == 900
    assert "budget 3 -> 5" in loop.changes and any("100" in c and "900" in c for c in loop.changes)
    loop.close()
    a = Archive(tmp_path / "archive.db", readonly=True)
    assert [ev.payload["changes"] for ev in a.events() if ev.kind == "resume_settings"] == [loop.changes]
    assert json.loads(a.get_meta("config"))["budget"] == 5
    a.close()
    for kw, given, words in [({"fidelity": "standard"}, {"fidelity"}, "--fidelity differs"),
                             ({"reeval_seeds": (1001,)}, {"reeval_seeds"}, "extend them"),
                             ({"search_seed": 4}, {"search_seed"}, "--seed differs")]:
        with pytest.raises(Exception, match=words):
            Loop(tmp_path, dataclasses.replace(cli_defaults, **kw), resume=True, given=frozenset(given))
    assert json.loads(Archive(tmp_path / "archive.db", readonly=True).get_meta("config"))["budget"] == 5


def test_a_run_is_not_resumed_on_a_retuned_sandbox(tmp_path, monkeypatch):
    """An upgrade that changes what a fidelity means (tiers, training set, settings) must not mix old and new
    evaluations in one archive: resuming is refused with the fix, and the archive is left as it was."""
    import poise.backends.tiny as loop_mod  # where the tiny backend takes its fingerprint
    from poise.evaluation.fidelity import sandbox_fingerprint

    Loop(tmp_path, _cfg(budget=1)).close()
    assert Archive(tmp_path / "archive.db", readonly=True).get_meta("sandbox") == sandbox_fingerprint("smoke")
    Loop(tmp_path, _cfg(budget=1), resume=True).close()  # the same sandbox resumes
    monkeypatch.setattr(loop_mod, "sandbox_fingerprint", lambda name: "0123456789abcdef")
    with pytest.raises(Exception, match="another version of the 'smoke' sandbox.*--out"):
        Loop(tmp_path, _cfg(budget=1), resume=True)
    assert Archive(tmp_path / "archive.db", readonly=True).get_meta("sandbox") == sandbox_fingerprint("smoke")
    # and the fingerprint does follow the sandbox's definition
    import poise.sandbox.task as task
    before = sandbox_fingerprint("smoke")
    monkeypatch.setattr(task, "TRAIN_TERMS", (2, 9))
    assert sandbox_fingerprint("smoke") != before


def _eval_keys(path):
    a = Archive(path, readonly=True)
    try:
        out = {}
        for e in a.entries():
            for v in a.evaluations(e.id):
                out[(v.entry_id, v.seed, v.fidelity)] = (v.created_at, v.metrics["overall"])
        starts = [(ev.entry_id, ev.payload.get("seed")) for ev in a.events() if ev.kind == "eval_start"]
        return out, starts
    finally:
        a.close()


def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    """Kill -9 the whole `poise discover` process group mid-run; `--resume` finishes the budget without
    losing or re-running any finished evaluation."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "poise.cli", "discover", "--fidelity", "smoke", "--budget", "4", "--out", str(out),
           "--reeval-top", "1", "--reeval-seeds", "2", "--threads", "1"]
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    before = {}
    while time.time() < deadline:
        time.sleep(0.5)
        if (out / "archive.db").exists():
            try:
                before, _ = _eval_keys(out / "archive.db")
            except Exception:
                continue
            if len(before) >= 3:  # the baseline and at least two candidates finished
                break
        assert p.poll() is None, p.stderr.read().decode()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert len(before) >= 3
    before, starts_before = _eval_keys(out / "archive.db")
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after, starts = _eval_keys(out / "archive.db")
    for k, v in before.items():
        assert after[k] == v  # kept, untouched
    for (eid, seed, fid) in before:
        assert starts.count((eid, seed)) == 1  # never started again
    a = Archive(out / "archive.db", readonly=True)
    trained = [e for e in a.entries() if e.id != 0 and e.status in ("evaluated", "failed")]
    assert len(trained) == 4
    assert not [e for e in a.in_flight() if e.status == "evaluating"]


class _Saboteur(Loop):
    """A loop whose implementer writes hostile code for its first proposals, then behaves."""

    BAD = [
        "import os\ndef compute_advantages(batch, cfg):\n    os.fork()\n    return batch.rewards\n",
        "import torch\ndef compute_advantages(batch, cfg):\n    while True:\n        pass\n",
        "import torch\ndef compute_advantages(batch, cfg):\n    torch.exp = None\n    return batch.rewards\n",
        "def compute_advantages(batch, cfg)\n    return 1\n",
        # GRPO that buys up to 4 times the rollouts a step: a search compares candidates at one budget
        "from poise.algorithms.base import group_mean, to_tokens\n"
        "CONFIG = {'dynamic_sampling': 3}\n"
        "def compute_advantages(batch, cfg):\n"
        "    r = batch.rewards.float()\n"
        "    return to_tokens(r - group_mean(r, batch.group_ids), batch.mask)\n",
        # GRPO in disguise: other names, same behaviour on the probe batches -> not evaluated twice
        "import torch\nfrom poise.algorithms.base import group_mean, group_std, to_tokens\n"
        "CONFIG = {'clip_low': 0.2, 'clip_high': 0.2, 'loss_agg': 'token-mean', 'kl_coef': 0.0}\n"
        "def compute_advantages(batch, cfg):\n"
        "    r = batch.rewards.float()\n"
        "    g = batch.group_ids\n"
        "    single = torch.bincount(g)[g] < 2\n"
        "    mu = torch.where(single, torch.zeros_like(r), group_mean(r, g))\n"
        "    sd = torch.where(single, torch.ones_like(r), group_std(r, g))\n"
        "    return to_tokens((r - mu) / (sd + cfg.eps), batch.mask)\n",
        # passes every synthetic check, then yields NaN once a real batch is long
        "import torch\nfrom poise.algorithms.base import group_mean, group_std, to_tokens\n"
        "def compute_advantages(batch, cfg):\n"
        "    s = batch.rewards.float()\n"
        "    a = (s - group_mean(s, batch.group_ids)) / (group_std(s, batch.group_ids) + cfg.eps)\n"
        "    if batch.max_len > 64:\n        a = a * float('nan')\n"
        "    return to_tokens(a, batch.mask)\n",
    ]

    def implement_and_verify(self, e):
        if self.BAD:
            code = self.BAD.pop(0)
            real = offline.implement
            try:
                offline.implement = lambda proposal, feedback=None: (code, proposal)
                return super().implement_and_verify(e)
            finally:
                offline.implement = real
        return super().implement_and_verify(e)


def test_hostile_candidates_are_rejected_or_contained_and_the_loop_goes_on(tmp_path):
    loop = _Saboteur(tmp_path, _cfg(budget=3, reeval_top=0))  # at most 3 x budget proposals: 9
    loop.BAD = list(_Saboteur.BAD)
    loop.run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    es = {e.id: e for e in a.entries()}
    rejected = [e for e in es.values() if e.status == "rejected"]
    stages = [(e.verification["stage"], " ".join(e.verification["errors"])) for e in rejected]
    assert len(rejected) == 6, stages
    assert stages[0][0] == "static" and "`import os` is not allowed" in stages[0][1]  # the fork bomb
    assert stages[1][0] == "timeout"  # the endless loop, killed from outside
    assert stages[2][0] == "static" and "`.exp`" in stages[2][1]  # monkey-patching torch
    assert stages[3][0] == "static" and "syntax error" in stages[3][1]
    assert stages[4][0] == "budget" and "remove dynamic_sampling from CONFIG" in stages[4][1]
    assert "behaves exactly like #0 GRPO" in rejected[5].status_reason
    failed = [e for e in es.values() if e.status == "failed"]
    assert failed and "non-finite" in failed[0].reflection["diagnosis"].lower() + str(failed[0].reflection)
    # the budget was still filled, with a failure counting as a trained candidate
    assert len([e for e in es.values() if e.status in ("evaluated", "failed") and e.id != 0]) == 3
    assert os.path.exists(tmp_path / "archive.db") and a.integrity_check() in (True, "ok")


def test_racing_gives_the_leader_and_a_repeat_parent_more_seeds_before_selection(tmp_path):
    summary = Loop(tmp_path, _cfg(budget=4, race_seeds=2, reeval_top=0)).run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    races = [ev for ev in a.events() if ev.kind == "race"]
    assert races, "a budget of 4 has rounds after the first: someone leads, so someone is raced"
    # the baseline races with the first of them, so raced candidates are compared with it seed by seed
    assert 0 in {ev.entry_id for ev in races}
    assert races[0].entry_id == 0 or any(r.entry_id == 0 and r.id <= races[0].id + 1 for r in races)
    for ev in races:
        e = a.get(ev.entry_id)
        seeds = sorted(v.seed for v in e.search_evaluations("smoke"))
        assert seeds == [0, 1]  # eval_seed and eval_seed + 1, each exactly once
        purpose = "baseline" if e.id == 0 else "search"
        assert all(v.purpose == purpose for v in e.search_evaluations())
    # a race happens before the round it decides: the next select event comes after the raced seeds landed
    selects = [ev for ev in a.events() if ev.kind == "select"]
    for r in races:
        later = [s for s in selects if s.id > r.id]
        if later:
            landed = [ev for ev in a.events() if ev.kind == "evaluation" and ev.entry_id == r.entry_id
                      and ev.payload.get("seed") == 1]
            assert landed and landed[0].id < later[0].id
    # the budget counts candidates, not racing seeds
    assert summary.evaluated + summary.failed == 4
    # every candidate that became a parent twice has the racing seeds behind it
    picks = [ev.entry_id for ev in selects]
    for i in {p for p in picks if picks.count(p) >= 2}:
        assert len(a.get(i).search_evaluations("smoke")) >= 2


def test_a_resume_that_fails_its_checks_writes_nothing(tmp_path, monkeypatch):
    """Agents that cannot start (here: no API key), a budget below what was already trained, or a bad
    minimum effect are refused before the archive records anything of that invocation."""
    from poise.agents.roles import AgentsConfig
    from poise.algorithms import builtin_source

    loop = Loop(tmp_path, _cfg(budget=3, min_effect={"length": 3.0}))
    a = loop.archive
    base = a.add_entry("GRPO", builtin_source("grpo"), {"name": "GRPO"}, [], 0)
    for name in ("A", "B"):
        i = a.add_entry(name, builtin_source("grpo"), {"name": name}, [base], 1)
        for st in ("verified", "evaluating", "failed"):
            a.set_status(i, st, "NaN" if st == "failed" else "")
    loop.close()

    def snapshot():
        r = Archive(tmp_path / "archive.db", readonly=True)
        try:
            return r.get_meta("config"), [ev.kind for ev in r.events()]
        finally:
            r.close()
    before = snapshot()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    bad = [(dict(agents=AgentsConfig(llm="openai:gpt-x")), {"agents.llm"}, "OPENAI_API_KEY"),
           (dict(budget=1), {"budget"}, "already trained 2"),
           (dict(min_effect={"speed": 1.0}), {"min_effect"}, "--min-effect")]
    for kw, given, words in bad:
        with pytest.raises(Exception, match=words):
            Loop(tmp_path, _cfg(**kw), resume=True, given=frozenset(given))
        assert snapshot() == before
    loop = Loop(tmp_path, _cfg(min_effect={"overall": 2.0}), resume=True, given=frozenset({"min_effect"}))
    assert loop.cfg.min_effect == {"length": 3.0, "overall": 2.0}  # a named metric changes, the other stays
    loop.close()


def test_a_run_records_every_minimum_effect_and_an_older_run_keeps_the_defaults_of_its_time(tmp_path):
    """A new run stores the minimum effects it will be judged by, named or not, so a later change of the defaults
    cannot move its verdicts; a run stored before they were recorded in full reads the former defaults (1 point)."""
    from poise.discovery.objective import MIN_EFFECT, MIN_EFFECT_BEFORE_RESIZE, run_objective

    assert MIN_EFFECT != MIN_EFFECT_BEFORE_RESIZE  # else this test shows nothing
    loop = Loop(tmp_path / "new", _cfg(min_effect={"length": 3.0}))
    loop.close()
    stored = json.loads(Archive(tmp_path / "new" / "archive.db", readonly=True).get_meta("config"))
    assert stored["min_effect"] == {**MIN_EFFECT, "length": 3.0}
    assert run_objective(stored).effect("overall") == MIN_EFFECT["overall"]
    old = {**stored, "min_effect": {}}  # what a run stored before the re-sizing holds
    assert run_objective(old).effect("overall") == MIN_EFFECT_BEFORE_RESIZE["overall"]
    assert run_objective({**stored, "min_effect": {"length": 3.0}}).effect("length") == 3.0


def test_a_run_records_its_accuracy_tolerance_and_an_older_run_keeps_two_points(tmp_path):
    from poise.discovery.objective import ACCURACY_TOLERANCE, ACCURACY_TOLERANCE_BEFORE_RESIZE, run_objective

    loop = Loop(tmp_path, _cfg(directive="accurate and concise", rank_on="overall@2"))
    loop.close()
    stored = json.loads(Archive(tmp_path / "archive.db", readonly=True).get_meta("config"))
    assert stored["accuracy_tolerance"] == ACCURACY_TOLERANCE["overall@2"] != ACCURACY_TOLERANCE_BEFORE_RESIZE
    assert run_objective(stored).constraints[0].tolerance == ACCURACY_TOLERANCE["overall@2"]
    older = {k: v for k, v in stored.items() if k != "accuracy_tolerance"}
    assert run_objective(older).constraints[0].tolerance == ACCURACY_TOLERANCE_BEFORE_RESIZE
    loop = Loop(tmp_path, _cfg(directive="accurate and concise", rank_on="overall@2"), resume=True, given=None)
    assert loop.objective.constraints[0].tolerance == ACCURACY_TOLERANCE["overall@2"] and loop.changes == []
    loop.close()


def test_resuming_a_run_stored_before_the_resizing_shows_and_keeps_its_rule(tmp_path):
    """A run whose stored config names no minimum effect was judged by the former defaults: naming those again
    changes nothing, naming another shows the rule it replaces, and extending its fresh seeds says that its
    minimum effect stays."""
    from poise.discovery.objective import MIN_EFFECT_BEFORE_RESIZE

    Loop(tmp_path, _cfg()).close()
    a = Archive(tmp_path / "archive.db")
    a.set_meta("config", json.dumps({**json.loads(a.get_meta("config")), "min_effect": {}}))
    a.close()
    old = f"overall={MIN_EFFECT_BEFORE_RESIZE['overall']:g}"
    loop = Loop(tmp_path, _cfg(min_effect={"overall": MIN_EFFECT_BEFORE_RESIZE["overall"]}), resume=True,
                given=frozenset({"min_effect"}))
    assert loop.changes == [] and loop.objective.effect("overall") == MIN_EFFECT_BEFORE_RESIZE["overall"]
    loop.close()
    loop = Loop(tmp_path, _cfg(reeval_seeds=(1001, 1002, 1003)), resume=True, given=frozenset({"reeval_seeds"}))
    assert any("reeval seeds" in c for c in loop.changes) and any(f"keeps its minimum effect, {old}" in c
                                                                  for c in loop.changes), loop.changes
    loop.close()
    loop = Loop(tmp_path, _cfg(min_effect={"overall": 0.5}), resume=True, given=frozenset({"min_effect"}))
    assert loop.changes == [f"min effect {dict(MIN_EFFECT_BEFORE_RESIZE)} -> {{'overall': 0.5, 'length': 5.0}}"]
    assert loop.objective.effect("overall") == 0.5 and loop.objective.effect("length") == 5.0
    loop.close()
