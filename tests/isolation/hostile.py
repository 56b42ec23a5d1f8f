"""Helpers of the hostile suite (``test_hostile_*.py``, one file per class of attack).

An attack is candidate source. Each test runs it the way poise would (the hook process directly, the
verifier, an evaluation, ``poise train FILE``, the discovery loop) and asserts the outcome from
outside: refused with a message, or contained, with evidence gathered here (files, listeners,
processes, the parent's life, the score of an untampered run). Nothing the candidate reports is taken
as evidence of anything.

``attack(body)`` wraps a block of code as a candidate that runs it on every call of
``compute_advantages`` and otherwise is exactly GRPO, so an evaluation must give GRPO's numbers to the
bit if the attack changed nothing. The block's exceptions are swallowed unless it sets ``REPORT``:
training goes on, and only outside evidence decides.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import textwrap
import threading
from pathlib import Path

import pytest

import poise
from poise.algorithms import builtin_source
from poise.algorithms.probe import make_probe_batch
from poise.isolation.hook import HookError, HookLimits, HookProcess
from poise.isolation.jail import jail_status

MARKER = "poise-hostile-marker"
SECRET = "sk-hostile-DO-NOT-LEAK-31337"
STRIP = ("sample_s", "step_s")
# an attack body: every tensor the hook process sends back is zeroed, under a header that claims a perfect
# score and a passed verdict (the candidate owns its process, so it can answer anything)
FORGED_ZEROS = """
    import poise.isolation.wire as wire
    real = wire.write_frame
    def forged(fd, header, tensors=None):
        if tensors and "out" in tensors:
            tensors = {"out": tensors["out"] * 0}
            header = {**header, "overall": 100.0, "verdict": "passed"}
        real(fd, header, tensors)
    wire.write_frame = forged
"""


def require_jail():
    """Skip where the jail cannot start; fail in CI, where the hostile suite must run."""
    st = jail_status()
    if not st.ok:
        if os.environ.get("CI") or os.environ.get("POISE_REQUIRE_JAIL"):
            pytest.fail(f"the hostile suite must run here, but the jail cannot start: {st.reason}")
        pytest.skip(f"no jail on this machine: {st.reason}")


def attack(body: str, imports: str = "import os", every_call: bool = True) -> str:
    """GRPO whose compute_advantages first runs ``body`` (indented code; exceptions swallowed)."""
    grpo = builtin_source("grpo").replace("def compute_advantages(batch, cfg):", "def _grpo(batch, cfg):")
    runner = textwrap.indent(textwrap.dedent(body).strip(), " " * 8)
    return (f"{imports}\n{grpo}\n\ndef _attack(batch, cfg):\n    try:\n{runner}\n    except BaseException:\n"
            f"        pass\n\n\ndef compute_advantages(batch, cfg):\n    _attack(batch, cfg)\n"
            f"    return _grpo(batch, cfg)\n")


def call_hook(source: str, op: str = "compute_advantages", limits: HookLimits = HookLimits(call_timeout_s=30)):
    """Load ``source`` in a jailed hook process and call ``op`` once on a probe batch. Returns the tensor,
    or the HookError the trusted side raised. The process is gone when this returns."""
    batch = make_probe_batch()
    try:
        with HookProcess(source, "hostile", "hostile.py", jailed=True, limits=limits) as hook:
            algo = hook.algorithm()
            return algo.compute_advantages(batch, algo.config)
    except HookError as e:
        return e


def curves(res) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in STRIP} for row in res.trajectory]


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _ours_or_orphaned(pid: int) -> bool:
    """Started under this test process, or left behind by whatever started it (reparented to init): not a
    process of some other program that happens to run the same code at the same time."""
    if _ppid(pid) == 1:
        return True
    while pid > 1:
        pid = _ppid(pid)
        if pid == os.getpid():
            return True
    return False


def processes_with(needle: str) -> list[int]:
    """Host processes (ours, or orphaned) whose command line or environment holds ``needle``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            blob = (d / "cmdline").read_bytes() + (d / "environ").read_bytes()
        except OSError:
            continue
        if needle.encode() in blob and _ours_or_orphaned(int(d.name)):
            out.append(int(d.name))
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Listeners:
    """A TCP and a UDP listener on loopback, a Unix socket in a host folder and an abstract Unix socket;
    each records whatever reaches it."""

    def __init__(self, folder: Path):
        self.got: list[str] = []
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = str(folder / "host.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        self.unix.listen()
        self.abstract_name = f"\0{MARKER}-{os.getpid()}"
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind(self.abstract_name)
        self.abstract.listen()
        self.socks = [self.tcp, self.udp, self.unix, self.abstract]
        for s in self.socks:
            s.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def tcp_port(self) -> int:
        return self.tcp.getsockname()[1]

    @property
    def udp_port(self) -> int:
        return self.udp.getsockname()[1]

    def _serve(self) -> None:
        while not self.stop.is_set():
            for s in self.socks:
                try:
                    if s is self.udp:
                        self.got.append(f"udp:{s.recv(100)!r}")
                    else:
                        conn, _ = s.accept()
                        self.got.append(f"{s.family.name}:connection")
                        conn.close()
                except (OSError, socket.timeout):
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


__all__ = ["FORGED_ZEROS", "MARKER", "SECRET", "Listeners", "alive", "attack", "call_hook", "curves", "files_under",
           "package_digest", "processes_with", "require_jail", "signal", "writes"]
