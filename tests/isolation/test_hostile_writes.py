"""Class: leaving something behind. Python's open, torch's C++ writers, dir_fd-relative calls, links,
/dev/shm and the private tmpfs: nothing outside the jail's own memory-backed /tmp can be written."""

import hashlib
from pathlib import Path

import pytest

import poise
from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import attack, call_hook, curves, files_under

pytestmark = pytest.mark.usefixtures("jail")


def package_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(poise.__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()


def writes(folder: Path) -> str:
    d = str(folder)
    pkg = str(Path(poise.__file__).parent)
    return f"""
        import torch
        targets = [{d!r} + "/a.txt", {pkg!r} + "/algorithms/grpo.py", "/tmp/../{Path(d).name}.txt",
                   {str(Path.home())!r} + "/poise-pwned.txt", "/dev/shm/poise-pwned"]
        for t in targets:
            for fn in (lambda: open(t, "w").write("x"), lambda: torch.save(torch.ones(3), t),
                       lambda: torch.from_file(t, shared=True, size=16),
                       lambda: os.close(os.open(t, os.O_CREAT | os.O_WRONLY))):
                try:
                    fn()
                except BaseException:
                    pass
        for fn in (lambda: os.open("a.txt", os.O_CREAT | os.O_WRONLY, dir_fd=os.open({d!r}, os.O_RDONLY)),
                   lambda: os.mkdir({d!r} + "/dir"), lambda: os.symlink("/etc/passwd", {d!r} + "/link"),
                   lambda: os.link({pkg!r} + "/__init__.py", "/tmp/hard"), lambda: os.remove({pkg!r} + "/cli/__init__.py"),
                   lambda: os.rename({pkg!r} + "/runs.py", "/tmp/runs.py"), lambda: os.chmod({d!r}, 0o777)):
            try:
                fn()
            except BaseException:
                pass
    """


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
