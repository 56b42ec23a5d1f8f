"""The child side of ``poise.isolation.process``: ``python -P -m poise.isolation._process_child REQUEST``.

Read the request, import torch and the target's module, set the resource limits relative to that
baseline, then call the target. Messages go to the parent as JSON lines on a dedicated pipe; stdout
and stderr are left to the target.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import threading
import traceback
from pathlib import Path

from poise.isolation.process import describe, is_memory_error


def _vm_size_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def apply_limits(limits: dict) -> None:
    """Set the rlimits, counted from now: what the interpreter, torch and the target's module already
    use is the baseline, so a limit means the same thing whatever the torch build maps at import."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    mb = 1024 * 1024
    if limits.get("file_mb") is not None:
        n = int(limits["file_mb"]) * mb
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    if limits.get("memory_mb") is not None:
        n = (_vm_size_bytes() or 0) + int(limits["memory_mb"]) * mb
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
    if limits.get("cpu_s") is not None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        n = int(ru.ru_utime + ru.ru_stime) + 1 + int(limits["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (n, n + 1))  # soft: SIGXCPU; hard: SIGKILL a second later


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the process that started it dies (Ctrl-C, SIGKILL, crash of
    the loop), so no evaluation outlives the run that wanted it."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the parent still kills the group on its way out
    if os.getppid() == 1:  # the parent died before the request above took effect
        os._exit(1)


def main(request_file: str) -> None:
    die_with_parent()
    req = json.loads(Path(request_file).read_text())
    os.remove(request_file)
    fd = int(req["fd"])
    lock = threading.Lock()

    def send(obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        with lock:  # one message at a time, even when the target emits from several threads
            while data:
                data = data[os.write(fd, data):]

    for p in req["sys_path"]:  # the caller's import path, so a target outside site-packages is found
        if p not in sys.path:
            sys.path.append(p)
    try:
        import torch

        torch.set_num_threads(int(req["threads"]))
        module, _, name = req["target"].partition(":")
        target = getattr(importlib.import_module(module), name)
        apply_limits(req["limits"])
    except BaseException as e:
        send({"type": "error", "kind": "error", "message": f"the sandbox could not start {req['target']}: "
              f"{describe(e)}", "traceback": traceback.format_exc()})
        os._exit(1)
    try:
        value = target(req["payload"], lambda msg: send({"type": "message", "data": msg}))
        try:
            send({"type": "result", "value": value})
        except (TypeError, ValueError) as e:
            send({"type": "error", "kind": "error", "traceback": "",
                  "message": f"{req['target']} returned a value that is not JSON-serialisable ({e}); return a dict "
                             f"of plain numbers, strings, lists and dicts"})
    except BaseException as e:
        send({"type": "error", "kind": "memory" if is_memory_error(e) else "error", "message": describe(e),
              "traceback": traceback.format_exc()})
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
