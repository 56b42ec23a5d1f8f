"""Run trusted poise code in a child process that is killed from outside.

    run_in_child("pkg.module:function", payload, Limits(timeout_s=30)) -> ChildResult

The evaluation workers use it: training and scoring are poise's own code (candidate code runs only in
the jailed hook process those workers start, ``poise.isolation.hook``), so this is resource
management, not containment. The child runs ``function(payload, emit)``; ``emit(dict)`` streams progress
to ``on_message`` here and the returned dict is the result. The child gets:

- its own process group (``start_new_session``), killed with SIGKILL on timeout and after every run;
- death with its parent (``PR_SET_PDEATHSIG``), so no evaluation outlives the run that wanted it;
- a scrubbed environment built from an allowlist: no API keys or tokens ever reach it;
- a private working folder, also its HOME and TMPDIR, deleted afterwards;
- rlimits: address space, CPU seconds, file size, no core dumps (``Limits``), set by the child itself
  once torch is imported, measured from that baseline.

Messages travel as JSON lines on a dedicated pipe, not stdout; stdout and stderr are captured and their
tails kept for the report.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

# Environment variables a child may see; everything else (API keys included) is dropped.
ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "POISE_CACHE", "POISE_DEVICE", "CUDA_VISIBLE_DEVICES",
                 "LD_LIBRARY_PATH")
# A variable whose name contains one of these never passes, even when a caller asks for it.
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE")
MEMORY_PHRASES = ("can't allocate memory", "cannot allocate memory", "out of memory", "not enough memory",
                  "bad_alloc", "memoryerror")
TAIL_BYTES = 4096
_POISE_ROOT = str(Path(__file__).resolve().parents[2])
_POISE_PACKAGE = str(Path(__file__).resolve().parents[1])
_LIBRARY_DIRS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0  # wall clock from the child's start (its ~1.5 s of imports included); inf: none
    # Address space the target may map beyond the child's baseline after importing torch and the
    # target's module (~0.65 GB with CPU torch). None: no limit, needed on CUDA, which reserves tens of GB.
    memory_mb: int | None = 4096
    threads: int = 1  # torch, OpenMP and MKL threads
    cpu_s: int | None = None  # CPU seconds of the target (all threads), None: no limit
    file_mb: int = 64  # largest file the child may write (its captured stdout included)


@dataclass
class ChildResult:
    ok: bool
    value: dict | None
    kind: str  # "ok" | "error" | "timeout" | "memory" | "crash" | "killed"
    message: str
    wall_s: float
    exit_code: int | None  # negative: killed by that signal
    output: str = ""  # the tail of the child's stdout and stderr
    traceback: str = ""  # the child's traceback when the target raised (for bugs in poise itself)
    pgid: int | None = None  # the child's process group, gone when this returns

    def to_dict(self) -> dict:
        return asdict(self)


def mentions_memory(text: str) -> bool:
    """Whether an error message or a stderr tail says that memory ran out."""
    return any(p in text.lower() for p in MEMORY_PHRASES)


def is_memory_error(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or mentions_memory(str(e))


def where(e: BaseException) -> str:
    """' (file line N: `code`)' for the innermost frame that is neither poise, nor the stdlib, nor an
    installed library: the candidate's (or a test target's) own line."""
    for f in reversed(traceback.extract_tb(e.__traceback__)):
        if f.filename.startswith((_POISE_PACKAGE, "<frozen", *_LIBRARY_DIRS)):
            continue
        line = (f.line or "").strip()
        return f" ({f.filename} line {f.lineno}: `{line}`)" if line else f" ({f.filename} line {f.lineno})"
    return ""


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}{where(e)}"


def child_env(limits: Limits, private: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.update(extra or {})
    # poise must be importable from the private folder even when it is not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_POISE_ROOT, env.get("PYTHONPATH")) if p)
    env.update(HOME=str(private), TMPDIR=str(private), OMP_NUM_THREADS=str(limits.threads),
               MKL_NUM_THREADS=str(limits.threads), PYTHONDONTWRITEBYTECODE="1")
    return {k: v for k, v in env.items() if not any(m in k.upper() for m in SECRET_MARKERS)}


def run_in_child(target: str, payload: dict, limits: Limits = Limits(),
                  on_message: Callable[[dict], None] | None = None, workdir: Path | None = None, *,
                  env: dict[str, str] | None = None) -> ChildResult:
    """Run ``target`` ("package.module:function") as ``function(payload, emit)`` in a contained child.

    ``workdir``: the private folder to use (kept afterwards); by default a fresh temporary one, deleted.
    ``env``: further variables to pass (still filtered: no keys or tokens).
    Never raises for anything the child does.
    """
    t0 = time.monotonic()
    private = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="poise-sandbox-"))
    private.mkdir(parents=True, exist_ok=True)
    private = private.resolve()
    r, w = os.pipe()
    request = private / ".request.json"
    request.write_text(json.dumps({
        "target": target, "payload": payload, "fd": w, "threads": limits.threads,
        "limits": {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "file_mb": limits.file_mb},
        "sys_path": [p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p)],
    }))
    cmd = [sys.executable, "-P", "-X", "faulthandler", "-m", "poise.isolation._process_child", str(request)]
    out_path, err_path = private / ".stdout", private / ".stderr"
    proc = None
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=private,
                                    env=child_env(limits, private, env), pass_fds=(w,), start_new_session=True)
        _LIVE.add(proc.pid)
        os.close(w)
        w = -1
        deadline = t0 + limits.timeout_s if math.isfinite(limits.timeout_s) else math.inf
        final = _supervise(proc, r, deadline, on_message)
        timed_out = final is None and _alive(proc.pid)
        code = _end(proc, wait_s=2.0 if final is not None else 0.0)
        tail = _tail(out_path, "stdout") + _tail(err_path, "stderr")
        res = _result(final, timed_out, code, tail, limits)
        res.pgid = proc.pid
        res.wall_s = time.monotonic() - t0
        return res
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        if proc is not None and proc.returncode is None:  # an exception here (a callback raised): still kill
            _end(proc, 0.0)
        if proc is not None:
            _LIVE.discard(proc.pid)
        if workdir is None:
            shutil.rmtree(private, ignore_errors=True)


def _supervise(proc: subprocess.Popen, r: int, deadline: float,
               on_message: Callable[[dict], None] | None) -> dict | None:
    """Read messages until the final one, the child's exit or the deadline. Returns the final one or None."""
    buf, pipe_open = b"", True
    while time.monotonic() < deadline:
        wait = min(deadline - time.monotonic(), 0.5)
        if pipe_open:
            ready, _, _ = select.select([r], [], [], max(wait, 0.0))
        else:
            ready = []
            time.sleep(max(min(wait, 0.05), 0.0))
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                pipe_open = False
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue  # not ours: the protocol fd was written by something else
                if msg.get("type") == "message":
                    if on_message is not None:
                        on_message(msg.get("data"))
                elif msg.get("type") in ("result", "error"):
                    return msg
        elif not _alive(proc.pid):
            return None
    return None


def _alive(pid: int) -> bool:
    """Whether the child is still running, without reaping it (so its pgid cannot be reused meanwhile)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def _end(proc: subprocess.Popen, wait_s: float) -> int:
    """Give the child ``wait_s`` to exit, then SIGKILL its whole process group, reap it, and return once
    the group is gone (a member reparented to init, such as the PID namespace's first process, may take
    a moment to be reaped there)."""
    t = time.monotonic() + wait_s
    while _alive(proc.pid) and time.monotonic() < t:
        time.sleep(0.01)
    _killpg(proc.pid)
    code = proc.wait()
    t = time.monotonic() + 5.0
    while _killpg(proc.pid) and time.monotonic() < t:
        time.sleep(0.01)
    return code


_LIVE: set[int] = set()  # process groups of the children running now, for kill_all


def kill_all() -> int:
    """SIGKILL every child this process has running (Ctrl-C of the loop: the children live in
    their own sessions, so the terminal's SIGINT never reaches them). Returns how many were signalled;
    the threads supervising them then see them die and return at once."""
    return sum(_killpg(pgid) for pgid in list(_LIVE))


def _killpg(pgid: int) -> bool:
    """SIGKILL the group; False when it no longer exists."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a member is not ours to signal (cannot happen for a child in its own group)
        return False


def _tail(path: Path, label: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f"--- {label} (last {TAIL_BYTES} bytes) ---\n{text}\n" if text else ""


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _result(final: dict | None, timed_out: bool, code: int, tail: str, limits: Limits) -> ChildResult:
    def res(ok, value, kind, message, traceback=""):
        return ChildResult(ok, value, kind, message, 0.0, code, output=tail, traceback=traceback)

    if final is not None and final["type"] == "result":
        return res(True, final.get("value"), "ok", "")
    if final is not None:
        return res(False, None, final.get("kind", "error"), final.get("message", ""), final.get("traceback", ""))
    if timed_out:
        return res(False, None, "timeout", f"the child process took longer than {limits.timeout_s:g}s and was "
                                           f"stopped (its process group was killed)")
    memoryish = mentions_memory(tail)
    if code < 0 and -code == signal.SIGXCPU:
        return res(False, None, "timeout", f"the child process used more than its {limits.cpu_s} CPU seconds and was "
                                           f"stopped")
    if memoryish:
        return res(False, None, "memory", f"the child process ran out of memory (limit: {limits.memory_mb} MB "
                                          f"beyond its baseline) and died (exit code {code})\n{tail}")
    if code < 0 and -code == signal.SIGKILL:
        return res(False, None, "killed", "the child process was killed (SIGKILL) from outside; "
                                          "if it used a lot of memory, this was likely the kernel's OOM killer")
    how = f"died from {_signal_name(code)}" if code < 0 else f"exited with exit code {code}"
    return res(False, None, "crash", f"the child process {how} without a result\n{tail}".rstrip())
