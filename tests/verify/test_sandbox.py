"""The sandbox, with real child processes: what a target can do, and what it cannot.

Starting a child costs about a second (it imports torch), so the escape attempts share one child
(``targets.escapes``) and each test below asserts one of its outcomes.
"""

import os
import socket
import threading
from pathlib import Path

import pytest

from poise.verify import sandbox
from poise.verify.sandbox import Limits, child_env, netns_available, run_sandboxed

SECRET = "POISE_TEST_API_KEY"


@pytest.fixture(scope="module")
def server():
    """A loopback TCP server that records every connection it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    got, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                got.append(conn.recv(100))
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join()
    srv.close()


@pytest.fixture(scope="module")
def escapes(tmp_path_factory, server):
    outside = tmp_path_factory.mktemp("outside")
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    os.environ[SECRET] = "sk-do-not-leak"
    try:
        res = run_sandboxed("tests.verify.targets:escapes",
                            {"outside_file": str(outside / "probe"), "victim": str(victim), "port": server[0],
                             "readable": str(Path(__file__)), "secret_name": SECRET}, Limits(timeout_s=30))
    finally:
        del os.environ[SECRET]
    assert res.ok, (res.kind, res.message, res.output)
    return res, outside, victim


def blocked(value: str, phrase: str) -> bool:
    return value.startswith("blocked: PermissionError: blocked by the poise sandbox") and phrase in value


def test_a_target_runs_streams_messages_and_its_prints_do_not_break_the_protocol():
    msgs = []
    res = run_sandboxed("tests.verify.targets:echo", {"x": [1, 2]}, Limits(timeout_s=30), on_message=msgs.append)
    assert res.ok and res.kind == "ok" and res.exit_code == 0
    assert msgs == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert res.value["payload"] == {"x": [1, 2]}
    assert "candidate noise on stdout, {not json}" in res.output
    env, cwd = res.value["env"], res.value["cwd"]
    assert env["HOME"] == env["TMPDIR"] == cwd and env["OMP_NUM_THREADS"] == "1"
    assert not Path(cwd).exists()  # the private folder is deleted afterwards
    assert {"process-group", "scrubbed-env", "private-dir", "rlimit-as", "audit-hook"} <= set(res.isolation)
    with pytest.raises(ProcessLookupError):
        os.killpg(res.pgid, 0)


def test_fork_is_blocked(escapes):
    assert blocked(escapes[0].value["fork"], "os.fork is not allowed")


def test_os_system_and_subprocess_are_blocked(escapes):
    res, outside, _ = escapes
    assert blocked(res.value["system"], "os.system is not allowed")
    assert blocked(res.value["subprocess"], "subprocess.Popen is not allowed")
    assert not (outside / "probe.system").exists()


def test_writes_outside_the_private_folder_are_blocked_and_inside_allowed(escapes):
    res, outside, victim = escapes
    assert blocked(res.value["write_outside"], "only the sandbox's private folder is writable")
    assert blocked(res.value["remove_outside"], "os.remove")
    assert blocked(res.value["mkdir_outside"], "os.mkdir")
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"] and victim.read_text() == "keep me"
    assert res.value["write_inside"] == "ok: 'inside.txt'"


def test_sqlite_is_blocked(escapes):
    assert escapes[0].value["sqlite"].startswith("blocked: ImportError: blocked by the poise sandbox: importing sqlite3")
    assert not (escapes[1] / "probe.db").exists()


def test_the_network_is_unreachable(escapes, server):
    assert blocked(escapes[0].value["socket"], "socket.")
    assert server[1] == []  # the loopback server never saw a connection


def test_foreign_functions_signals_env_and_rlimits_are_blocked(escapes):
    v = escapes[0].value
    assert blocked(v["ctypes"], "ctypes.dlopen")
    assert blocked(v["kill_parent"], "os.kill")
    assert blocked(v["putenv"], "os.putenv")
    assert blocked(v["raise_rlimit"], "resource.setrlimit")


def test_reading_is_allowed_but_api_keys_never_reach_the_child(escapes):
    v = escapes[0].value
    assert v["read_file"].startswith("ok: '\"\"\"The sandbox")
    assert v["api_key"] == "<absent>"
    assert v["home"] == v["cwd"]


def test_secret_looking_variables_are_dropped_even_when_asked_for(tmp_path):
    env = child_env(Limits(threads=3), tmp_path, {"OPENAI_API_KEY": "x", "HF_TOKEN": "y", "POISE_CACHE": "/c"})
    assert "OPENAI_API_KEY" not in env and "HF_TOKEN" not in env
    assert env["POISE_CACHE"] == "/c" and env["MKL_NUM_THREADS"] == "3" and env["HOME"] == str(tmp_path)


@pytest.mark.skipif(not netns_available(), reason="unshare -rn does not work on this machine")
def test_the_child_has_its_own_empty_network_namespace():
    res = run_sandboxed("tests.verify.targets:interfaces", {}, Limits(timeout_s=30))
    assert res.ok and res.value["interfaces"] == ["lo"]  # only a loopback, and it is down
    assert "netns" in res.isolation


def test_without_namespaces_the_audit_hook_still_refuses_sockets(monkeypatch, server):
    monkeypatch.setattr(sandbox, "namespace_wrapper", lambda: ((), ()))
    res = run_sandboxed("tests.verify.targets:socket_only", {"port": server[0]}, Limits(timeout_s=30))
    assert res.ok and "netns" not in res.isolation and "audit-hook" in res.isolation
    assert blocked(res.value["socket"], "socket.")
    assert server[1] == []


def test_an_endless_loop_is_killed_with_its_process_group():
    msgs = []
    res = run_sandboxed("tests.verify.targets:spin", {}, Limits(timeout_s=3), on_message=msgs.append)
    assert res.kind == "timeout" and "longer than 3s" in res.message and not res.ok
    assert msgs == [{"spinning": True}]  # messages sent before the deadline still arrive
    assert 3 <= res.wall_s < 6
    with pytest.raises(ProcessLookupError):
        os.killpg(res.pgid, 0)


def test_a_cpu_limit_stops_a_busy_child():
    res = run_sandboxed("tests.verify.targets:spin", {}, Limits(timeout_s=30, cpu_s=1))
    assert res.kind == "timeout" and "more than its 1 CPU seconds" in res.message and "rlimit-cpu" in res.isolation
    assert res.wall_s < 10


def test_a_huge_allocation_is_a_memory_failure_not_a_dead_machine():
    # 4 GB: possible on this machine without the limit, refused with 2 GB of headroom
    res = run_sandboxed("tests.verify.targets:allocate", {"n": 10**9}, Limits(timeout_s=30, memory_mb=2048))
    assert res.kind == "memory" and "can't allocate memory" in res.message
    assert "targets.py line" in res.message  # the target's own line


def test_an_exception_comes_back_with_its_type_message_and_line():
    res = run_sandboxed("tests.verify.targets:fail", {}, Limits(timeout_s=30))
    assert res.kind == "error" and res.message.startswith("ValueError: a bad value from the target (")
    assert "targets.py line" in res.message and "Traceback" in res.traceback


def test_a_child_that_exits_without_a_result_is_a_crash(tmp_path):
    res = run_sandboxed("tests.verify.targets:exit_with", {"code": 3}, Limits(timeout_s=30), workdir=tmp_path / "w")
    assert res.kind == "crash" and "exit code 3 without a result" in res.message and res.exit_code == 3
    assert (tmp_path / "w").is_dir()  # a given workdir is kept
