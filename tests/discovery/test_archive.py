import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from poise.discovery.archive import Archive, ArchiveError, check_metrics, code_hash

TIERS = ("aime24", "aime25", "amc", "math500", "minerva", "olympiad")


def metrics(overall=50.0, length=30.0, validity=95.0, hard=20.0) -> dict:
    """A metrics dict shaped like evaluate_policy's; the pass@k tiers' pass@1 all equal `hard`."""
    tiers = {t: {"metric": "pass@32" if i < 3 else "greedy", "pass@1": hard if i < 3 else overall,
                 "validity": validity, "length": length, "score": overall, "problems": 64, "samples": 32}
             for i, t in enumerate(TIERS)}
    return {"tiers": tiers, "overall": overall, "length": length, "validity": validity, "weights": {t: 1 / 6 for t in TIERS}}


def evaluating(a: Archive, name: str, parents=(), code=None) -> int:
    i = a.add_entry(name, code or f"# {name}\n", {"hypothesis": name}, list(parents), len(parents))
    a.set_status(i, "verified")
    a.set_status(i, "evaluating")
    return i


@pytest.fixture
def arc(tmp_path):
    with Archive(tmp_path / "run" / "archive.db") as a:
        yield a


def test_round_trip_of_every_field(arc):
    base = arc.add_entry("GRPO", "def compute_advantages(b, c):\n    return 0\n", {"hypothesis": "baseline"}, [], 0,
                         status="verified")
    assert base == 0  # the baseline is entry 0
    proposal = {"hypothesis": "mask invalid responses", "mechanism": "VM", "math": "A = ...", "claims": ["x"],
                "tags": ["validity", "masking"], "nested": {"k": [1, 2.5, None]}}
    i = arc.add_entry("VM-GRPO", "code = 1  \n\n", proposal, [0], 1, directive="accurate and concise",
                      context_ids=[0])
    arc.set_verification(i, {"static": "ok", "attempts": 2})
    arc.set_behaviour(i, "beh123")
    arc.set_status(i, "verified", "checks passed")
    arc.set_status(i, "evaluating")
    traj = [{"step": 0, "reward": 0.1, "entropy": float("nan")}, {"step": 1, "reward": 0.2, "entropy": 1.0}]
    arc.add_evaluation(i, 0, "smoke", traj, metrics(52.0), 12.5)
    arc.add_evaluation(i, 1, "smoke", traj, metrics(54.0, hard=24.0), 13.5)
    arc.add_evaluation(i, 2, "full", traj, metrics(60.0), 99.0, purpose="reeval")
    arc.set_status(i, "evaluated")
    arc.set_reflection(i, {"diagnosis": "entropy stays healthy", "next": ["try AV"]})
    arc.add_cost(i, wall_s=10.0, tokens=1000, attempts=1)
    arc.add_cost(i, wall_s=2.5, tokens=500)
    arc.set_meta("fidelity", "smoke")
    arc.set_meta("settings", {"strategy": "lineage", "seeds": [0, 1]})
    arc.close()

    with Archive(arc.path, readonly=True) as r:
        e = r.get(i)
        assert (e.name, e.parent_ids, e.parent_id, e.generation, e.directive) == ("VM-GRPO", [0], 0, 1, "accurate and concise")
        assert e.context_ids == [0] and r.get(0).context_ids == []
        assert e.proposal == proposal and e.code == "code = 1  \n\n" and e.code_hash == code_hash("code = 1")
        assert e.verification == {"static": "ok", "attempts": 2} and e.behaviour == "beh123"
        assert (e.status, e.status_reason) == ("evaluated", "")
        assert e.reflection == {"diagnosis": "entropy stays healthy", "next": ["try AV"]}
        assert e.cost == {"wall_s": 12.5, "tokens": 1500, "attempts": 1}
        assert e.created_at <= e.updated_at
        assert [(v.seed, v.fidelity, v.purpose, v.wall_s) for v in e.evaluations] == [
            (0, "smoke", "search", 12.5), (1, "smoke", "search", 13.5), (2, "full", "reeval", 99.0)]
        assert e.evaluations[0].trajectory[1] == {"step": 1, "reward": 0.2, "entropy": 1.0}
        assert e.evaluations[0].trajectory[0]["entropy"] != e.evaluations[0].trajectory[0]["entropy"]  # NaN kept
        assert set(e.metrics_by_seed) == {0, 1}  # the re-evaluation is not a search evaluation
        assert e.mean_metric("overall") == 53.0 and e.mean_metric("hard_pass1") == 22.0
        assert e.mean_metric("length") == 30.0 and e.mean_metric("validity") == 95.0
        assert e.metric_ci("overall").n == 2
        assert r.evaluations(i, purpose="reeval")[0].metrics["overall"] == 60.0
        assert r.get(0).name == "GRPO" and r.get(0).parent_id is None
        assert r.get_meta("settings") == {"strategy": "lineage", "seeds": [0, 1]}
        assert r.get_meta("missing", 7) == 7 and r.meta()["schema_version"] == 2
        kinds = [ev.kind for ev in r.events()]
        assert kinds.count("entry") == 2 and kinds.count("evaluation") == 3 and "reflection" in kinds
        status_ev = [ev for ev in r.events(kind="status") if ev.payload["to"] == "verified" and ev.entry_id == i]
        assert status_ev[0].payload == {"from": "proposed", "to": "verified", "reason": "checks passed"}
        last = r.events()[-1].id
        assert r.events(since_id=last) == []
        assert [x.id for x in r.entries(trajectories=False)] == [0, 1]
        assert r.entries(trajectories=False)[1].evaluations[0].trajectory is None
        assert [x.id for x in r.entries("verified")] == [0]
        with pytest.raises(ArchiveError, match="read-only"):
            r.add_entry("x", "", {}, [], 0)


def test_status_moves_only_forward(arc):
    i = arc.add_entry("A", "a", {}, [], 0)
    arc.set_status(i, "verified")
    arc.set_status(i, "evaluating")
    with pytest.raises(ArchiveError, match=r"entry 0: cannot move status from 'evaluating' to 'verified'"):
        arc.set_status(i, "verified")
    with pytest.raises(ArchiveError, match="without any evaluation"):
        arc.set_status(i, "evaluated")
    with pytest.raises(ArchiveError, match="unknown status 'done'.*current 'evaluating'"):
        arc.set_status(i, "done")
    arc.set_status(i, "failed", "NaN loss at step 3")
    assert arc.get(i).status_reason == "NaN loss at step 3"
    with pytest.raises(ArchiveError, match="from 'failed' to 'evaluating'.*it is final"):
        arc.set_status(i, "evaluating")
    r = arc.add_entry("B", "b", {}, [0], 1)
    arc.set_status(r, "rejected", "duplicate of 0")
    with pytest.raises(ArchiveError, match="entry 1: cannot move status from 'rejected' to 'verified'"):
        arc.set_status(r, "verified")
    with pytest.raises(ArchiveError, match="entry 7 is not in the archive"):
        arc.set_status(7, "verified")


def test_set_once_fields_and_accumulating_cost(arc):
    i = arc.add_entry("A", "a", {}, [], 0)
    arc.set_reflection(i, {"d": 1})
    with pytest.raises(ArchiveError, match="already has a reflection"):
        arc.set_reflection(i, {"d": 2})
    arc.set_verification(i, {"ok": True})
    with pytest.raises(ArchiveError, match="already has a verification"):
        arc.set_verification(i, {"ok": False})
    arc.set_behaviour(i, "h")
    with pytest.raises(ArchiveError, match="already has a behaviour"):
        arc.set_behaviour(i, "h2")
    assert arc.add_cost(i, tokens=5) == {"tokens": 5}
    assert arc.add_cost(i, tokens=5, wall_s=1.5) == {"tokens": 10, "wall_s": 1.5}
    with pytest.raises(ArchiveError, match="finite number"):
        arc.add_cost(i, tokens=float("inf"))
    with pytest.raises(ArchiveError, match="JSON-serialisable"):
        arc.add_entry("B", "b", {"obj": object()}, [], 0)
    with pytest.raises(ArchiveError, match="parent 9 of new entry 'C'"):
        arc.add_entry("C", "c", {}, [9], 1)


def test_a_proposal_is_implemented_once_with_set_code(arc):
    i = arc.add_entry("A", "", {"hypothesis": "h"}, [], 0)
    arc.set_code(i, "def f():\n    return 1\n", {"hypothesis": "h", "refined": True})
    e = arc.get(i)
    assert e.code_hash == code_hash("def f():\n    return 1") and e.proposal == {"hypothesis": "h", "refined": True}
    with pytest.raises(ArchiveError, match="already has code"):
        arc.set_code(i, "other")
    j = arc.add_entry("B", "", {}, [], 0)
    arc.set_code(j, "b")  # the proposal stays as it was
    assert arc.get(j).proposal == {}
    k = arc.add_entry("C", "", {}, [], 0)
    arc.set_status(k, "rejected", "could not implement")
    with pytest.raises(ArchiveError, match="only be set while it is 'proposed'"):
        arc.set_code(k, "c")
    with pytest.raises(ArchiveError, match="context entry 9 of new entry 'D'"):
        arc.add_entry("D", "d", {}, [0], 1, context_ids=[9])


def test_duplicate_evaluation_raises_and_has_evaluation_sees_it(arc):
    i = evaluating(arc, "A")
    assert not arc.has_evaluation(i, 0, "smoke")
    arc.add_evaluation(i, 0, "smoke", [], metrics(), 1.0)
    assert arc.has_evaluation(i, 0, "smoke") and not arc.has_evaluation(i, 0, "standard")
    with pytest.raises(ArchiveError, match="already has an evaluation for seed 0 at fidelity 'smoke'"):
        arc.add_evaluation(i, 0, "smoke", [], metrics(60.0), 1.0)
    assert arc.get(i).evaluations[0].metrics["overall"] == 50.0  # not overwritten
    arc.add_evaluation(i, 0, "standard", [], metrics(), 1.0)  # another fidelity is another row
    j = arc.add_entry("B", "b", {}, [], 0)
    with pytest.raises(ArchiveError, match="set_status\\(id, 'evaluating'\\)"):
        arc.add_evaluation(j, 0, "smoke", [], metrics(), 1.0)


@pytest.mark.parametrize("bad,problem", [
    (metrics(overall=float("nan")), "overall is nan"),
    (metrics(overall=130.0), "overall = 130.0 is outside"),
    (metrics(validity=-1.0), "validity = -1.0 is outside"),
    (metrics(length=-2.0), "length = -2.0 is negative"),
    ({"overall": 50.0, "tiers": {"amc": {"pass@32": 101.0}}}, "tiers.amc.pass@32"),
    ({"overall": 50.0, "tiers": {"amc": {"length": float("inf")}}}, "tiers.amc.length is inf"),
    ({"length": 3.0}, "numeric 'overall'"),
    ([1, 2], "must be a dict"),
])
def test_impossible_metrics_are_refused(arc, bad, problem):
    assert problem in check_metrics(bad)
    i = evaluating(arc, "A")
    with pytest.raises(ArchiveError, match="impossible metrics"):
        arc.add_evaluation(i, 0, "smoke", [], bad, 1.0)
    assert arc.evaluations(i) == []


def test_good_metrics_pass_the_check():
    assert check_metrics(metrics()) is None
    assert check_metrics({"overall": 0, "length": 0.0}) is None


def test_find_code_ignores_trailing_whitespace_and_blank_lines(arc):
    i = arc.add_entry("A", "def f(x):\n    return x\n", {}, [], 0)
    arc.add_entry("B", "def g():\n    pass\n", {}, [], 0)
    j = arc.add_entry("A2", "def f(x):   \r\n    return x\t\n\n\n", {}, [], 0)
    assert code_hash("def f(x):   \r\n    return x\t\n\n\n") == code_hash("def f(x):\n    return x")
    assert code_hash("def f(x):\n  return x\n") != code_hash("def f(x):\n    return x\n")  # indentation matters
    assert arc.find_code(code_hash("def f(x):\n    return x")).id == i < j  # the earliest copy
    assert arc.find_code(code_hash("nothing")) is None
    arc.set_behaviour(j, "b1")
    assert arc.find_behaviour("b1").id == j and arc.find_behaviour("b2") is None


def test_lineage_children_depth_on_a_small_tree(arc):
    #      0
    #    /   \
    #   1     2
    #  / \     \
    # 3   4     5 (second parent 1: an influence, not the parent)
    #     |
    #     6
    ids = [arc.add_entry("GRPO", "0", {}, [], 0)]
    for name, parents in [("1", [0]), ("2", [0]), ("3", [1]), ("4", [1]), ("5", [2, 1]), ("6", [4])]:
        ids.append(arc.add_entry(name, name, {}, parents, 0))
    assert ids == list(range(7))
    assert [e.id for e in arc.children(0)] == [1, 2]
    assert [e.id for e in arc.children(1)] == [3, 4]  # 5 lists 1 only as an influence
    assert arc.children(6) == []
    assert [e.id for e in arc.lineage(6)] == [0, 1, 4, 6]
    assert [e.id for e in arc.lineage(5)] == [0, 2, 5]
    assert [e.id for e in arc.lineage(0)] == [0]
    assert [arc.depth(i) for i in ids] == [0, 1, 1, 2, 2, 2, 3]


def test_in_flight_lists_what_a_resume_must_handle(arc):
    a = arc.add_entry("proposed", "a", {}, [], 0)
    b = arc.add_entry("verified", "b", {}, [], 0)
    arc.set_status(b, "verified")
    c = evaluating(arc, "evaluating")
    arc.add_evaluation(c, 0, "smoke", [], metrics(), 1.0)
    d = evaluating(arc, "evaluated")
    arc.add_evaluation(d, 0, "smoke", [], metrics(), 1.0)
    arc.set_status(d, "evaluated")
    e = arc.add_entry("rejected", "e", {}, [], 0)
    arc.set_status(e, "rejected")
    assert [x.id for x in arc.in_flight()] == [a, b, c]
    assert [v.seed for v in arc.in_flight()[2].evaluations] == [0]  # finished seeds survive


def test_append_only_is_enforced_by_the_database_too(arc):
    i = evaluating(arc, "A")
    arc.add_evaluation(i, 0, "smoke", [], metrics(), 1.0)
    con = sqlite3.connect(arc.path)
    for sql in ["DELETE FROM entries", "DELETE FROM evaluations", "UPDATE evaluations SET seed = 5",
                "UPDATE entries SET code = 'x'", "UPDATE entries SET name = 'x'", "DELETE FROM events"]:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()


def test_not_an_archive_gives_a_clear_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n" * 10)
    with pytest.raises(ArchiveError, match="not a poise archive \\(not an SQLite database\\)"):
        Archive(text)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(ArchiveError, match="SQLite database but not a poise archive"):
        Archive(other)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt", "other.db"]  # nothing left behind
    with pytest.raises(ArchiveError, match="is a directory"):
        Archive(tmp_path)
    with pytest.raises(ArchiveError, match="no archive at"):
        Archive(tmp_path / "missing.db", readonly=True)


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "a.db"
    Archive(p).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(ArchiveError, match="schema 99, newer than this poise understands"):
        Archive(p)


def test_one_writer_at_a_time(tmp_path):
    p = tmp_path / "a.db"
    with Archive(p) as a:
        with pytest.raises(ArchiveError, match="being written by another process"):
            Archive(p)
        with Archive(p, readonly=True) as r:  # readers are welcome
            assert r.entries() == []
        a.add_entry("GRPO", "x", {}, [], 0)
    with Archive(p) as again:  # the lock goes with the writer
        assert again.get(0).name == "GRPO"


# -- crash safety and concurrency: a real child process writing ------------------------------------------
WRITER = textwrap.dedent("""
    import sys, time
    from poise.discovery.archive import Archive
    path, mode = sys.argv[1], sys.argv[2]
    m = {"overall": 50.0, "length": 30.0, "validity": 95.0}
    a = Archive(path)
    def say(*x):
        print(*x, flush=True)  # printed only after the write committed
    base = a.add_entry("GRPO", "base", {}, [], 0, status="evaluating")
    say("entry", base)
    for k in range(10 ** 6):
        i = a.add_entry(f"c{k}", f"code {k}", {"k": k, "pad": "x" * 2000}, [base], 1)
        say("entry", i)
        a.set_status(i, "verified"); say("status", i, "verified")
        a.set_status(i, "evaluating"); say("status", i, "evaluating")
        for seed in range(3):
            a.add_evaluation(i, seed, "smoke", [{"step": s, "r": 0.5} for s in range(50)], m, 0.1)
            say("eval", i, seed)
            if mode == "hang" and k == 3 and seed == 1:
                say("hanging")
                time.sleep(600)
        a.set_status(i, "evaluated"); say("status", i, "evaluated")
""")


def _spawn(path: Path, mode: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode], stdout=subprocess.PIPE, text=True,
                            env=env)


def _read_until(proc: subprocess.Popen, stop) -> list[list[str]]:
    lines = []
    for line in proc.stdout:
        lines.append(line.split())
        if stop(lines):
            break
    return lines


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


ORDER = ("proposed", "verified", "evaluating", "evaluated")


def test_sigkill_mid_write_loses_nothing_committed(tmp_path):
    p = tmp_path / "a.db"
    proc = _spawn(p, "run")
    lines = _read_until(proc, lambda ls: len(ls) >= 120)
    _kill(proc)  # the child is writing as fast as it can: the kill lands at an arbitrary point
    with Archive(p) as a:
        assert a.integrity_check() == "ok"
        for kind, i, *rest in lines:
            e = a.get(int(i))
            if kind == "status":
                assert ORDER.index(e.status) >= ORDER.index(rest[0])
            if kind == "eval":
                assert int(rest[0]) in {v.seed for v in e.evaluations}
        for e in a.entries():
            assert len(e.evaluations) <= 3
            assert e.status != "evaluated" or len(e.evaluations) == 3  # the child marks evaluated after 3 seeds
        # the database keeps accepting writes after the crash
        n = a.add_entry("after", "after", {}, [0], 1)
        assert a.get(n).name == "after"


def test_sigkill_mid_candidate_keeps_its_finished_seeds_in_flight(tmp_path):
    p = tmp_path / "a.db"
    proc = _spawn(p, "hang")
    _read_until(proc, lambda ls: ls[-1] == ["hanging"])
    _kill(proc)
    with Archive(p) as a:
        assert a.integrity_check() == "ok"
        flight = a.in_flight()
        assert [(e.name, e.status) for e in flight] == [("GRPO", "evaluating"), ("c3", "evaluating")]
        assert [v.seed for v in flight[1].evaluations] == [0, 1]
        assert a.has_evaluation(flight[1].id, 1, "smoke") and not a.has_evaluation(flight[1].id, 2, "smoke")
        assert [e.status for e in a.entries()[1:4]] == ["evaluated"] * 3


def test_a_reader_sees_consistent_snapshots_while_a_process_writes(tmp_path):
    p = tmp_path / "a.db"
    proc = _spawn(p, "run")
    _read_until(proc, lambda ls: len(ls) >= 2)  # the schema exists
    errors, checks = [], 0
    try:
        with Archive(p, readonly=True) as r:
            deadline = time.time() + 1.5
            while time.time() < deadline:
                with r.snapshot():
                    entries = r.entries(trajectories=False)
                    events = r.events()
                # an entry and its event are one transaction, as are an evaluation and its event: inside one
                # snapshot the counts must agree exactly
                n_eval = sum(len(e.evaluations) for e in entries)
                if len(entries) != sum(ev.kind == "entry" for ev in events):
                    errors.append(("entries", len(entries)))
                if n_eval != sum(ev.kind == "evaluation" for ev in events):
                    errors.append(("evaluations", n_eval))
                checks += 1
    finally:
        _kill(proc)
    assert checks > 5 and errors == []
    with Archive(p, readonly=True) as r:
        assert len(r.entries()) > 3  # the writer did make progress while we read


def test_threads_share_one_archive(arc):
    base = evaluating(arc, "GRPO")

    def work(t):
        for k in range(10):
            arc.add_evaluation(base, 100 * t + k, "smoke", [], metrics(), 0.1)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(arc.evaluations(base)) == 40


def test_a_schema_1_archive_is_read_as_it_is_and_upgraded_when_written(tmp_path):
    """An archive written before LLM accounting (schema 1): readable unchanged, and opening it for
    writing adds the llm_calls table and nothing else."""
    import shutil
    from pathlib import Path

    src = Path(__file__).parents[2] / "tests" / "fixtures" / "run_before_retune.db"
    path = tmp_path / "archive.db"
    shutil.copy(src, path)
    with Archive(path, readonly=True) as r:
        assert r.meta()["schema_version"] == 1
        assert r.llm_calls() == [] and r.llm_spent() == (0, 0.0)
        before = [(e.id, e.name, e.status, e.code_hash) for e in r.entries(trajectories=False)]
    with Archive(path) as w:
        assert w.meta()["schema_version"] == 2
        w.add_llm_call(role="proposer", provider="openai", model="m", cache_key="k", prompt="[]", response="r",
                       tokens_in=3, tokens_out=4, latency_s=0.1, attempts=1, cached=0, ok=1)
        assert [(e.id, e.name, e.status, e.code_hash) for e in w.entries(trajectories=False)] == before
        assert w.llm_spent() == (7, 0.0) and w.llm_cached("k")["response"] == "r"
        with pytest.raises(Exception, match="append-only"):
            w._con.execute("DELETE FROM llm_calls")
        assert w.integrity_check() == "ok"
