"""Class: reading what is not the candidate's: API keys in the environment, the parent's
/proc/PID/environ, files in the user's home, the archive. The jail has an empty environment, no /proc
but a copy of cpuinfo, and only the Python installation and poise to read."""

import os
from pathlib import Path

import pytest

from tests.isolation.hostile import SECRET, attack, call_hook

pytestmark = pytest.mark.usefixtures("jail")


def test_no_secret_is_visible_from_the_hook(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("POISE_HOSTILE_TOKEN", SECRET)
    (tmp_path / "archive.db").write_text(SECRET)
    home_secret = Path.home() / ".poise-hostile-secret"
    home_secret.write_text(SECRET)
    try:
        src = attack(f"""
            import glob
            found = [repr(dict(os.environ))]
            for path in ["/proc/{os.getpid()}/environ", "/proc/self/environ", "/proc/1/environ", {str(tmp_path / "archive.db")!r},
                         {str(home_secret)!r}, "/etc/passwd", "/root/.bash_history"]:
                try:
                    found.append(open(path, errors="replace").read())
                except BaseException as e:
                    found.append(type(e).__name__)
            for pattern in ("/proc/*/environ", "/work/**/*.db", "/tmp/**", "/home/*/*", "/root/*"):
                found += glob.glob(pattern, recursive=True)
            raise RuntimeError("FOUND " + " ".join(found))
        """).replace("    except BaseException:\n        pass\n", "    except RuntimeError:\n        raise\n", 1)
        res = call_hook(src)
    finally:
        home_secret.unlink()
    assert isinstance(res, Exception) and "FOUND" in str(res), res
    text = str(res)
    assert SECRET not in text and "DO-NOT-LEAK" not in text
    env = text.split("FOUND ")[1]
    assert "OPENAI_API_KEY" not in env and "POISE_CACHE" not in env
