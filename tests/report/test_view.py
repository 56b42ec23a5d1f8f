import json
import sqlite3

import pytest

from poise.discovery.archive import Archive
from poise.report.view import RunError, RunView, pm
from tests.report import fake_run


@pytest.fixture
def run(tmp_path):
    return fake_run.build(tmp_path / "run")


def test_scores_front_and_confirmation_follow_the_objective(run):
    v = RunView.load(run)
    assert [c.name for c in v.leaderboard()] == ["AV-GRPO", fake_run.HOSTILE, "GRPO", "DACE-GRPO"]
    assert [c.score for c in v.leaderboard()] == [94.0, 92.0, 90.0, 89.0]  # default objective: Overall
    assert [c.name for c in v.pareto_front()] == ["AV-GRPO"]  # (Overall, hard pass@1): it dominates the rest
    av = v.get(1)
    d = av.confirmation
    assert d is not None and d.verdict == "discovery" and d.overall["n"] == 3
    assert d.d_overall["mean"] == pytest.approx(4.2) and d.d_overall["lo"] > 0 and d.d_overall["method"] == "paired"
    assert v.baseline_confirm["seeds"] == 3 and v.noise() == pytest.approx(2.484, abs=0.01)
    assert v.confirm_seeds == [1001, 1002, 1003] and d.seeds == [1001, 1002, 1003]
    assert v.get(2).confirmation is None  # never re-evaluated
    assert v.get(4).score is None and v.get(5).score is None  # rejected, failed


def test_a_concise_directive_changes_the_ranking(tmp_path):
    v = RunView.load(fake_run.build(tmp_path / "run", directive="accurate and concise"))
    # DACE-GRPO is 25% shorter than GRPO and within 2 points: the length term lifts it above GRPO
    names = [c.name for c in v.leaderboard()]
    assert names.index("DACE-GRPO") < names.index("GRPO")
    assert "DACE-GRPO" in [c.name for c in v.pareto_front()]


def test_budget_counts_what_was_trained_and_what_is_in_flight(run):
    b = RunView.load(run).budget()
    assert (b["budget"], b["trained"], b["proposals"], b["max_proposals"], b["in_flight"]) == (4, 4, 6, 12, 1)
    assert b["train_s"] == pytest.approx(2.0 * 10)  # 4 search + 6 re-evaluation seeds, 2 s each
    assert b["llm"] is None


def test_counts_lineage_and_children(run):
    v = RunView.load(run)
    assert v.counts() == {"evaluated": 3, "rejected": 1, "failed": 1, "proposed": 1}
    assert v.parent(v.get(3)).name == "AV-GRPO" and v.parent(v.baseline) is None
    assert {c.name for c in v.children(v.get(2))} == {"NAN-GRPO", "LATER-GRPO"}
    assert [x.id for x in v.lineage(v.get(3))] == [3, 1, 0]
    assert list(v.curves(v.get(3))) == [f"#3 {fake_run.HOSTILE}", "parent #1 AV-GRPO"]
    assert v.curves(v.get(4)) == {} and v.curves(v.baseline) == {"#0 GRPO": [v.baseline.entry.evaluations[0].trajectory]}
    diff = v.code_diff(v.get(1))
    assert diff[0] == "--- #0 GRPO" and diff[1] == "+++ #1 AV-GRPO" and v.code_diff(v.baseline) == []


def test_unknown_id_names_the_valid_range(run):
    with pytest.raises(RunError, match=r"no candidate #42 .* ids are 0\.\.6 .*poise status"):
        RunView.load(run).get(42)


def test_missing_empty_and_foreign_run_folders(tmp_path):
    with pytest.raises(RunError, match="no archive at"):
        RunView.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="holds no archive.db"):
        RunView.load(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "archive.db").write_text("hello")
    with pytest.raises(RunError, match="not a poise archive"):
        RunView.load(tmp_path / "text")
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(RunError, match="not a poise archive"):
        RunView.load(tmp_path / "other.db")


def test_a_truncated_archive_is_a_clear_error(run):
    db = run / "archive.db"
    data = db.read_bytes()
    assert len(data) > 8192
    db.write_bytes(data[:8192])  # the header survives, the tables do not
    with pytest.raises(RunError, match="damaged|not a usable poise archive"):
        RunView.load(run)


def test_a_corrupt_row_is_a_clear_error(run):
    con = sqlite3.connect(run / "archive.db")
    for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f"DROP TRIGGER {t}")  # the archive refuses edits; drop its guards to damage it on purpose
    con.execute("UPDATE entries SET proposal = '{not json' WHERE id = 2")
    con.commit()
    con.close()
    with pytest.raises(RunError, match="cannot be read .*damaged"):
        RunView.load(run)


def test_reads_a_run_while_its_writer_is_adding_to_it(run):
    w = Archive(run / "archive.db")  # the loop holds the writer lock while it runs
    try:
        before = RunView.load(run)
        i = w.add_entry("NEW-GRPO", "", {"name": "NEW-GRPO"}, [0], 1)
        after = RunView.load(run)
        assert len(after.candidates) == len(before.candidates) + 1 and after.get(i).status == "proposed"
    finally:
        w.close()


def test_an_empty_archive_says_the_run_has_not_started(tmp_path):
    Archive(tmp_path / "archive.db").close()
    with pytest.raises(RunError, match="no entries yet"):
        RunView.load(tmp_path)


def test_the_shipped_run_matches_its_documented_confirmation(tmp_path):
    v = RunView.load(fake_run.shipped(tmp_path / "run"))
    assert len(v.candidates) == 9 and v.counts() == {"evaluated": 8}
    d = v.get(4).confirmation  # DACE1-GRPO in docs/benchmarks.md: -1.8 [-2.7, -0.8] tokens
    assert d.overall["n"] == 5 and round(d.d_length["mean"], 1) == -1.8
    assert round(d.d_length["lo"], 1) == -2.7 and round(d.d_length["hi"], 1) == -0.8
    assert round(d.d_overall["mean"], 1) == -0.8
    # a run of evaluation protocol 1 keeps the Welch intervals it reported: its arms did not share their draws
    assert d.d_overall["method"] == d.d_length["method"] == "Welch"
    assert json.loads(json.dumps(v.budget()))["trained"] == 8


def test_pm_formats_an_interval_or_only_the_mean():
    assert pm({"mean": 1.0, "lo": 0.5, "hi": 1.5, "n": 3, "std": 0.2}) == "1.0 ± 0.5 (n=3)"
    assert pm({"mean": 1.0, "lo": float("nan"), "hi": float("nan"), "n": 1, "std": float("nan")}) == "1.0"
    assert pm(None) == ""


def test_the_run_state_tells_a_running_a_stopped_and_a_finished_run_apart(tmp_path):
    """The lock file of a killed run still names its pid: the state comes from whether a process holds
    the writer lock, not from the file. A run the loop marked finished is finished until it logs anew."""
    import signal
    import subprocess
    import sys
    import time

    root = fake_run.build(tmp_path / "run")
    db = root / "archive.db"
    assert RunView.load(root).state().startswith("stopped: resume with `poise discover --resume --out")
    code = f"from poise.discovery.archive import Archive; a = Archive({str(db)!r}); print('open', flush=True); " \
           f"import time; time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "open"
        assert RunView.load(root).state() == f"running (pid {p.pid})"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (root / "archive.db.lock").read_text().strip() == str(p.pid)  # the file still names the dead writer
    assert Archive.writer_pid(db) is None and RunView.load(root).state().startswith("stopped")
    a = Archive(db)
    a.set_meta("finished", repr(time.time()))
    a.close()
    assert RunView.load(root).state() == "finished"
    a = Archive(db)
    a.log("resume_settings", None, changes=["budget 4 -> 6"])
    a.close()
    assert RunView.load(root).state().startswith("stopped")


def test_a_stopped_run_says_what_its_resume_continues(tmp_path):
    """A proposal left when the budget is spent is never trained, so a stopped run then lacks only its
    confirmation; with room in the budget, it and any candidate that was training continue."""
    root = fake_run.build(tmp_path / "run")  # budget 4 spent, LATER-GRPO still proposed
    view = RunView.load(root)
    assert (view.budget()["in_flight"], view.budget()["unfinished"]) == (1, 0)
    assert view.state().endswith("(its confirmation on fresh seeds continues then)")
    a = Archive(root / "archive.db")
    cfg = json.loads(a.get_meta("config"))
    a.set_meta("config", json.dumps({**cfg, "budget": 6}))
    a.close()
    # room for 2 more: the proposal left continues, and the search goes on after it
    assert RunView.load(root).state().endswith("(1 unfinished candidate(s) continue then)")
    a = Archive(root / "archive.db")
    a.set_meta("config", json.dumps({**cfg, "budget": 4 + 3}))
    later = max(e.id for e in a.entries())
    a.set_status(later, "rejected", "not verified")
    a.close()
    assert RunView.load(root).state().endswith("(the search continues then: 3 more candidate(s) to propose and train)")
    a = Archive(root / "archive.db")
    a.set_meta("config", json.dumps({**cfg, "budget": 6}))
    a.add_entry("TRAINING-GRPO", "", {"name": "TRAINING-GRPO", "mechanism": "m"}, [later], 3)
    a.set_status(later + 1, "verified")
    a.set_status(later + 1, "evaluating")
    a.add_entry("ANOTHER-GRPO", "", {"name": "ANOTHER-GRPO", "mechanism": "m"}, [later], 3)
    a.close()
    view = RunView.load(root)  # 1 training (always resumed) + 1 proposed, room for 2 in all
    assert view.budget()["unfinished"] == 2
    assert view.state().endswith("(2 unfinished candidate(s) continue then)")


def test_a_run_stopped_inside_its_confirmation_is_not_finished(tmp_path):
    """Without the loop's end mark, a spent budget with nothing in flight is finished only when every fresh-seed
    evaluation it started has its result."""
    root = fake_run.build(tmp_path / "run")  # its confirmation on seeds 1001-1003 is archived
    a = Archive(root / "archive.db")
    later = max(e.id for e in a.entries())
    a.set_status(later, "rejected", "not verified")  # nothing in flight now
    a.close()
    assert RunView.load(root).state() == "finished"
    a = Archive(root / "archive.db")
    a.log("eval_start", 0, seed=1004, purpose="reeval")  # stopped while this one trained
    a.close()
    assert RunView.load(root).state().endswith("(its confirmation on fresh seeds continues then)")
    a = Archive(root / "archive.db")
    a.log("evaluation", 0, seed=1004, purpose="reeval")
    a.close()
    assert RunView.load(root).state() == "finished"
