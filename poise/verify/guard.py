"""The in-process guard of a sandbox child: a ``sys.addaudithook`` that refuses escapes.

Installed once the child has imported what its target needs and before any candidate code runs; an
audit hook cannot be removed. It raises ``PermissionError`` on events a candidate never needs:
sockets, new processes, signals to other processes, environment changes, foreign functions (ctypes),
databases, rlimit changes, and writes (open for writing, remove, rename, mkdir, ...) outside the
child's private folder and the folders the caller declared writable; and ``ImportError`` on a first
import of a few modules (sqlite3, ssl, ...). Reading files stays allowed: torch and poise import
lazily.

PEP 578 hooks are not a sandbox on their own: code that reaches a C function raising no event (say
``_posixsubprocess.fork_exec``) gets past them. They are one layer, under the network and PID
namespaces, the process group and the resource limits that the parent applies
(``poise.verify.sandbox``), and over the static check (``poise.verify.static``), which keeps a
candidate from naming such functions in the first place.
"""

from __future__ import annotations

import os
import sys
import threading

# Events refused outright (exact names), and by prefix.
BLOCKED_EVENTS = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.kill", "os.killpg", "signal.pthread_kill", "os.putenv", "os.unsetenv", "resource.setrlimit",
    "resource.prlimit", "webbrowser.open", "urllib.Request", "http.client.connect", "ftplib.connect",
    "smtplib.connect", "imaplib.open", "poplib.connect", "nntplib.connect", "telnetlib.Telnet.open",
    "os.setxattr", "os.removexattr", "os.mknod", "os.mkfifo", "pty.spawn",
}
BLOCKED_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "sqlite3.")
# Modules whose import is refused (with ImportError, which libraries handle) when not loaded yet.
# socket, subprocess, ctypes and multiprocessing are not here: torch has loaded them already, a cached
# import raises no event, and torch imports their submodules lazily; what they do is refused above.
BLOCKED_IMPORTS = {"sqlite3", "_sqlite3", "ssl", "_ssl", "pty", "ftplib", "smtplib", "imaplib", "poplib",
                   "telnetlib", "webbrowser"}
# Events that write to the file system: which arguments are paths, and which (if any) a dir_fd.
WRITE_EVENTS = {
    "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
    "os.rename": ((0, 1), (2, 3)), "shutil.rmtree": ((0,), (1,)), "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)), "os.truncate": ((0,), ()), "os.utime": ((0,), (3,)), "os.symlink": ((1,), (2,)),
    "os.link": ((0, 1), (2, 3)), "shutil.copyfile": ((1,), ()), "shutil.copymode": ((1,), ()),
    "shutil.copystat": ((1,), ()), "shutil.chown": ((0,), ()), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class _Guard:
    def __init__(self, writable: list[str]):
        self.roots = [os.path.realpath(p) for p in writable] + ["/dev/null"]
        self.local = threading.local()

    def _inside(self, path, dir_fd=None) -> bool:
        if isinstance(path, int):  # an fd opened before the guard (the protocol pipe, stdout): refuse writes
            return False
        path = os.fsdecode(path)
        if dir_fd not in (None, -1, -100) and not os.path.isabs(path):  # -1: no dir_fd, -100: AT_FDCWD
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        else:
            base = os.getcwd()
        real = os.path.realpath(os.path.join(base, path))
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.roots)

    def refusal(self, event: str, args: tuple) -> str | None:
        if event in BLOCKED_EVENTS or event.startswith(BLOCKED_PREFIXES):
            return f"{event} is not allowed in the sandbox"
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writes = (isinstance(flags, int) and flags & WRITE_FLAGS) or (isinstance(mode, str) and set(mode) & set("wax+"))
            if writes and not self._inside(path):
                return f"writing {path!r} is not allowed: only the sandbox's private folder is writable"
            return None
        spec = WRITE_EVENTS.get(event)
        if spec is not None:
            paths, fds = spec
            dir_fds = [args[i] for i in fds if i < len(args)]
            for k, i in enumerate(paths):
                if i < len(args) and not self._inside(args[i], dir_fds[min(k, len(dir_fds) - 1)] if dir_fds else None):
                    return f"{event} on {args[i]!r} is not allowed: only the sandbox's private folder is writable"
        return None

    def __call__(self, event: str, args: tuple) -> None:
        if event == "import":
            name = args[0] or ""
            if name.split(".")[0] in BLOCKED_IMPORTS:
                raise ImportError(f"blocked by the poise sandbox: importing {name} is not allowed", name=name)
            return
        if getattr(self.local, "busy", False):  # events raised by the guard's own checks
            return
        self.local.busy = True
        try:
            why = self.refusal(event, args)
        finally:
            self.local.busy = False
        if why is not None:
            raise PermissionError(f"blocked by the poise sandbox: {why}")


def install(writable: list[str]) -> None:
    """Install the guard for the rest of this process's life; ``writable`` are the folders it may write."""
    sys.addaudithook(_Guard(writable))
