"""Class: starting processes, and processes that outlive the run. No fork, exec or spawn works in the
jail, whatever the route (os, subprocess, _posixsubprocess.fork_exec, posix_spawn, a new session)."""

import os
import time

import pytest

from tests.isolation.hostile import MARKER, attack, call_hook, processes_with

pytestmark = pytest.mark.usefixtures("jail")

SPAWNS = f"""
import subprocess, _posixsubprocess, sys
argv = ["/bin/sleep", "300"]
pr, pw = os.pipe()
env = ["M={MARKER}"]
attempts = [
    lambda: os.fork(),
    lambda: subprocess.Popen(argv, env={{"M": "{MARKER}"}}, start_new_session=True),
    lambda: os.posix_spawn(argv[0], argv, {{"M": "{MARKER}"}}),
    lambda: _posixsubprocess.fork_exec([b"/bin/sleep", b"300"], [b"/bin/sleep"], True, (pw,), None,
                                       [b"M={MARKER}"], -1, -1, -1, -1, -1, -1, pr, pw, True, True, -1, None,
                                       None, None, -1, None, False),  # CPython 3.11's signature
    lambda: os.execv(argv[0], argv),
    lambda: (os.setsid(), os.fork()),
    lambda: os.system("sleep 300 # {MARKER}") == 0 or os.strerror(1) + 1,  # -1: it could not fork
]
results = []
for a in attempts:
    try:
        r = a()
        if r == 0:  # a forked child: linger as long as possible
            time.sleep(300)
        results.append("ran")
    except BaseException as e:
        results.append(type(e).__name__)
raise RuntimeError("spawns: " + ",".join(results))
"""


def test_no_process_can_be_started_and_none_survives():
    src = attack(SPAWNS, imports="import os\nimport time").replace(
        "    except BaseException:\n        pass\n", "    except RuntimeError:\n        raise\n", 1)
    res = call_hook(src)
    assert isinstance(res, Exception) and "spawns:" in str(res), res
    outcomes = str(res).split("spawns: ")[1].split(" ")[0].split(",")
    assert "ran" not in outcomes, outcomes
    time.sleep(0.5)
    assert processes_with(MARKER) == []


def test_no_thread_can_be_started():
    # threads count against the process limit only for a user: Linux exempts root, and a jail mapped to
    # root could exhaust the host's PIDs with small-stack threads. So the filter refuses new threads once
    # torch's own pool is running.
    res = call_hook(attack("""
        import threading
        started = 0
        try:
            for _ in range(2000):
                threading.stack_size(65536)
                threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                started += 1
        finally:
            raise RuntimeError(f"threads started: {started}")
    """, imports="import os\nimport time").replace("    except BaseException:\n        pass\n",
                                                   "    except RuntimeError:\n        raise\n", 1))
    assert isinstance(res, Exception) and "threads started:" in str(res), res
    started = int(str(res).split("threads started: ")[1].split(" ")[0].rstrip(")"))
    assert started == 0, started
