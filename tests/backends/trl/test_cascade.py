"""The cascade end to end on the CPU: a smoke search, then its best promoted to the TRL backend (a small
Llama built here). Its own file, the longest test of the TRL backend's: `-n 2 --dist loadfile` keeps a
file on one worker, and this one beside the other TRL tests unbalanced the two."""

import sqlite3

import pytest

pytest.importorskip("trl")

from tests.backends.trl.test_end_to_end import CONFIG, poise  # noqa: E402


def test_the_cascade_promotes_the_best_of_a_finished_tiny_run_to_trl(tmp_path, smoke_policy):
    out = tmp_path / "run"
    r = poise("discover", "--fidelity", "smoke", "--budget", "1", "--race-seeds", "1", "--reeval-top", "1",
              "--reeval-seeds", "1", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # added to the finished run: only the promotion trains (nothing of the search is trained twice)
    light = tmp_path / "light.toml"  # one step and a few problems: what is tested is the cascade, not training
    light.write_text(CONFIG.replace("steps = 3", "steps = 1").replace("limit = 4", "limit = 2")
                     .replace("limit = 8", "limit = 2"))
    p = poise("discover", "--resume", "--out", str(out), "--promote", "trl", "--promote-config", str(light),
              "--promote-top", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    db = sqlite3.connect(out / "archive.db")
    by_fid = {}
    for entry, seed, fid in db.execute("select entry_id, seed, fidelity from evaluations"):
        by_fid.setdefault(fid, set()).add((entry, seed))
    top = max(e for e, _ in by_fid["smoke/confirm"])  # the confirmed candidate (the baseline is 0)
    assert by_fid["trl/confirm"] == {(0, 1001), (top, 1001)}
    assert len(by_fid["smoke"]) == 2  # the search evaluations, once each
    assert db.execute("select value from meta where key = 'promote_sandbox'").fetchone() is not None
    db.close()
    s = poise("status", str(out), cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    assert "trl Overall" in s.stdout and "rank agreement" in s.stdout and "over 2 entries" in s.stdout
    rep = poise("report", str(out), "-o", str(tmp_path / "report.html"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "Promoted to trl" in (tmp_path / "report.html").read_text()
    # a different promotion setup for the same run is refused
    other = tmp_path / "other.toml"
    other.write_text(light.read_text().replace("steps = 1", "steps = 2"))
    again = poise("discover", "--resume", "--out", str(out), "--promote", "trl", "--promote-config", str(other),
                  cwd=tmp_path)
    assert again.returncode != 0 and "--promote-config differs" in again.stdout + again.stderr
