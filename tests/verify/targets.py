"""Sandbox targets for the tests: poise-owned code that misbehaves on purpose, run by ``run_sandboxed``.

Each escape attempt returns "ok: ..." when it worked and "blocked: ..." with the error when it did not,
so one child can try many things (a child costs ~1 s of torch import).
"""

import os
import signal
import socket  # imported before the audit hook goes in, so a connection is refused by event, not by import
import time


def echo(payload, emit):
    print("candidate noise on stdout, {not json}")
    for i in range(3):
        emit({"step": i})
    return {"payload": payload, "cwd": os.getcwd(), "env": dict(os.environ)}


def spin(payload, emit):
    emit({"spinning": True})
    while True:
        pass


def allocate(payload, emit):
    import torch
    x = torch.ones(int(payload["n"]))  # a real allocation: every page touched
    return {"sum": float(x.sum())}


def fail(payload, emit):
    raise ValueError("a bad value from the target")


def exit_with(payload, emit):
    os._exit(payload["code"])


def abort(payload, emit):
    os.abort()


def _attempt(fn):
    try:
        return f"ok: {fn()!r}"
    except BaseException as e:
        return f"blocked: {type(e).__name__}: {e}"


def _fork():
    pid = os.fork()
    if pid == 0:  # should never happen; if it does, do nothing harmful
        os._exit(0)
    return pid


def _subprocess():
    import subprocess
    return subprocess.run(["true"]).returncode


def _write(path):
    with open(path, "w") as f:
        f.write("written by the sandbox")
    return path


def _sqlite(path):
    import sqlite3
    sqlite3.connect(path).execute("create table t (x)")
    return path


def _connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"hello from the sandbox")
    return "connected"


def _ctypes():
    import ctypes
    return ctypes.CDLL(None).getpid()


def _raise_rlimit():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def escapes(payload, emit):
    """Try everything a malicious candidate might; report what happened to each."""
    return {
        "fork": _attempt(_fork),
        "system": _attempt(lambda: os.system("touch " + payload["outside_file"] + ".system")),
        "subprocess": _attempt(_subprocess),
        "write_outside": _attempt(lambda: _write(payload["outside_file"])),
        "write_inside": _attempt(lambda: _write("inside.txt")),
        "remove_outside": _attempt(lambda: os.remove(payload["victim"])),
        "mkdir_outside": _attempt(lambda: os.mkdir(payload["outside_file"] + ".dir")),
        "sqlite": _attempt(lambda: _sqlite(payload["outside_file"] + ".db")),
        "socket": _attempt(lambda: _connect(payload["port"])),
        "ctypes": _attempt(_ctypes),
        "kill_parent": _attempt(lambda: os.kill(os.getppid(), signal.SIGTERM)),
        "putenv": _attempt(lambda: os.environ.__setitem__("POISE_INJECTED", "1")),
        "raise_rlimit": _attempt(_raise_rlimit),
        "read_file": _attempt(lambda: open(payload["readable"]).read()),
        "api_key": os.environ.get(payload["secret_name"], "<absent>"),
        "home": os.environ.get("HOME"),
        "cwd": os.getcwd(),
    }


def interfaces(payload, emit):
    """The network interfaces the child sees (reading /proc is allowed)."""
    lines = open("/proc/self/net/dev").read().splitlines()[2:]
    return {"interfaces": sorted(l.split(":")[0].strip() for l in lines)}


def check_many(payload, emit):
    """The verifier's in-child checks on several candidates in one child (static check skipped, so the
    runtime layer is what is tested)."""
    from poise.verify.properties import run_checks
    return {name: run_checks(c["source"], name, f"candidate:{name}", c["claims"])
            for name, c in payload["candidates"].items()}


def socket_only(payload, emit):
    return {"socket": _attempt(lambda: _connect(payload["port"]))}


def slow_then_answer(payload, emit):
    time.sleep(payload["sleep_s"])
    return {"done": True}
