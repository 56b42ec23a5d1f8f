"""Class: leaving something behind. Python's open, torch's C++ writers, dir_fd-relative calls, links,
/dev/shm and the private tmpfs: nothing outside the jail's own memory-backed /tmp can be written."""

from pathlib import Path

import pytest

from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import attack, call_hook, curves, files_under, package_digest, writes

pytestmark = pytest.mark.usefixtures("jail")


def test_no_write_reaches_the_host(tmp_path):
    (tmp_path / "keep.txt").write_text("keep me")
    before, pkg = files_under(tmp_path), package_digest()
    shm = set(Path("/dev/shm").iterdir()) if Path("/dev/shm").exists() else set()
    res = call_hook(attack(writes(tmp_path)))
    assert not isinstance(res, Exception), res
    assert files_under(tmp_path) == before and package_digest() == pkg
    assert not (Path.home() / "poise-pwned.txt").exists()
    assert (set(Path("/dev/shm").iterdir()) if Path("/dev/shm").exists() else set()) == shm
    assert oct(tmp_path.stat().st_mode)[-3:] != "777"


def test_the_private_tmpfs_is_capped():
    res = call_hook(attack("""
        blob = b"x" * (1 << 20)
        with open("/tmp/fill", "wb") as f:
            for _ in range(512):
                f.write(blob)
        REPORT = os.path.getsize("/tmp/fill")
        raise SystemExit(f"wrote {REPORT}")
    """).replace("    except BaseException:\n        pass\n", "    except OSError as e:\n        raise RuntimeError(f'stopped: {e}')\n", 1))
    # 512 MB were asked for; the file-size limit (16 MB) or the tmpfs (64 MB) stops it
    assert isinstance(res, Exception) and "stopped" in str(res) and ("File too large" in str(res)
                                                                      or "No space" in str(res)), res


def test_an_evaluation_that_tries_every_write_scores_like_grpo(tmp_path, grpo_smoke):
    before = files_under(tmp_path)
    res = evaluate_source(attack(writes(tmp_path)))
    assert files_under(tmp_path) == before
    assert res.metrics == grpo_smoke.metrics and curves(res) == curves(grpo_smoke)
