"""The trusted side of the hook contract: candidate code runs in a hook process, never here.

    with HookProcess(source, name, origin, jail=True) as hook:
        algo = hook.algorithm()          # an Algorithm whose hooks are calls into the hook process
        adv = algo.compute_advantages(batch, algo.config)

The trainer and the verifier send plain detached tensors (a ``RolloutBatch``; for the loss, a leaf
copy of the mini-batch's log-probs) and get tensors back. ``compute_policy_loss`` comes back as the
loss value and its gradient with respect to the log-probs, both computed by autograd in the hook
process; here they become a surrogate whose value is the candidate's loss and whose gradient is the
candidate's gradient, so ``surrogate.backward()`` trains the policy exactly as the candidate's loss
would, while the candidate never sees the policy. The trainer's tensors may live on any device; they
cross on the CPU.

Every answer is checked before it is used (dtypes, shapes, sizes; the trainer checks finiteness), and
every call has a deadline: a hook that hangs, dies, ends its process or breaks the protocol raises
``HookError`` with a message that names the hook.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from torch import Tensor

from poise.algorithms.base import AlgoConfig, Algorithm, RolloutBatch, default_policy_loss, surrogate
from poise.isolation import wire
from poise.isolation.jail import POISE_PACKAGE, jail_command, jail_status
from poise.isolation.process import mentions_memory
from poise.isolation.text import printable

BATCH_TENSORS = ("rewards", "correct", "valid", "lengths", "mask", "group_ids", "old_logp", "ref_logp", "entropy",
                 "truncated")
TAIL_BYTES = 2000


class HookError(Exception):
    """The candidate's hook failed, misbehaved or could not run; the message says which hook and how."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        # "load" | "error" | "memory" | "type" | "timeout" | "died" | "protocol" | "jail"
        self.kind = kind


class JailUnavailable(Exception):
    """Code that poise did not write would run without the jail; the message names the problem and the fix."""


@dataclass(frozen=True)
class HookLimits:
    call_timeout_s: float = 60.0  # wall clock of one hook call (hooks take milliseconds on a training batch)
    start_timeout_s: float = 60.0  # starting the process and importing torch (about 1.5 s)
    total_s: float | None = None  # wall clock of the whole session, start included; None: no limit
    memory_mb: int | None = 2048  # address space beyond the process's baseline after importing torch; None: no limit
    cpu_s: int | None = None  # CPU seconds of the hook process in all; None: no limit
    file_mb: int = 16  # largest file it may write (its private tmpfs holds 64 MB in all)
    open_files: int = 64


@dataclass
class Isolation:
    """How a hook process is contained, as recorded with every evaluation and verification."""

    jailed: bool
    warning: str = ""


def choose_isolation(poise_wrote_it: bool, unsafe_no_jail: bool = False) -> Isolation:
    """Jail when the machine can; otherwise poise's own code (the built-ins, the offline implementer's)
    runs unjailed with a warning, and anyone else's code only with ``unsafe_no_jail``."""
    st = jail_status()
    if st.ok:
        return Isolation(True)
    if poise_wrote_it:
        return Isolation(False, warning=f"warning: the jail cannot start on this machine, so poise's own algorithm "
                                        f"code runs in an unjailed hook process ({st.reason})")
    if unsafe_no_jail:
        return Isolation(False, warning=f"UNSAFE: --unsafe-no-jail: candidate code runs in an unjailed hook process "
                                        f"(the jail cannot start: {st.reason}); this is recorded with the results")
    raise JailUnavailable(f"the jail that contains candidate code cannot start on this machine: {st.reason}. Code "
                          f"that poise did not write (LLM-written candidates, your own files) runs only in the jail; "
                          f"fix the above, or pass --unsafe-no-jail to run it anyway (it is recorded in the run)")


CONFIG_DEPTH = 4  # CONFIG = {"extra": {"knob": [1, 2]}} is three levels


def _plain(x, depth: int) -> bool:
    """JSON-like data no deeper than ``depth`` (what a CONFIG may hold; copying it can never recurse far)."""
    if isinstance(x, (str, int, float, bool)) or x is None:
        return True
    if depth <= 0:
        return False
    if isinstance(x, list):
        return all(_plain(v, depth - 1) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v, depth - 1) for k, v in x.items())
    return False


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmSize for process {pid}")


class HookProcess:
    """One hook process holding one candidate. Use as a context manager; ``close()`` kills it."""

    def __init__(self, source: str, name: str, origin: str, *, jailed: bool, threads: int = 1,
                 limits: HookLimits = HookLimits()):
        self.source, self.name, self.origin = source, name, origin
        self.jailed, self.threads, self.limits = jailed, threads, limits
        self.proc: subprocess.Popen | None = None
        self.layers: list[str] = []
        self.hooks: list[str] = []
        self.config: dict = {}
        self.calls = 0
        self.call_s = 0.0
        self._err: IO[bytes] | None = None
        self._cpuinfo: IO[bytes] | None = None
        self._in = self._out = -1
        self._end = math.inf

    # ----------------------------------------------------------------------------------------------
    # life cycle

    def __enter__(self) -> "HookProcess":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the process, set its limits from outside, and load the candidate. Raises HookError."""
        self._end = time.monotonic() + self.limits.total_s if self.limits.total_s is not None else math.inf
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        self._err = tempfile.TemporaryFile()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
               "PYTHONPATH": str(POISE_PACKAGE.parent), "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        argv = [sys.executable, "-P", "-m", "poise.isolation._hook_server", str(req_r), str(resp_w)]
        fds = [req_r, resp_w]
        if self.jailed:
            self._cpuinfo = tempfile.TemporaryFile()
            try:
                self._cpuinfo.write(Path("/proc/cpuinfo").read_bytes())
            except OSError:
                pass
            self._cpuinfo.seek(0)
            fds.append(self._cpuinfo.fileno())
            cmd = jail_command(argv, env, self._cpuinfo.fileno())
            self.layers = ["hook-process", "bubblewrap", "namespaces", "read-only-fs", "private-tmpfs"]
            cwd = None
        else:
            cmd, self.layers, cwd = argv, ["hook-process", "scrubbed-env"], tempfile.gettempdir()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err,
                                         pass_fds=fds, start_new_session=True, env=env, cwd=cwd)
        except OSError as e:
            for fd in (req_r, req_w, resp_r, resp_w):
                os.close(fd)
            raise HookError(f"the hook process could not start: {e}", "jail") from None
        os.close(req_r)
        os.close(resp_w)
        self._in, self._out = req_w, resp_r
        os.set_blocking(req_w, False)  # writes honour the deadline too (see _write)
        deadline = min(time.monotonic() + self.limits.start_timeout_s, self._end)
        self._read(deadline, 0, "start")  # {"ready"}: torch is imported, no candidate code has run
        try:
            self._set_limits()
        except OSError:  # the process went away between its "ready" and its limits
            raise self._died("start") from None
        self._write({"op": "load", "source": self.source, "name": self.name, "origin": self.origin,
                     "threads": self.threads, "seccomp": True}, deadline=deadline, op="load")
        try:
            head, _ = self._read(deadline, 0, "load")  # written before the candidate's code runs
            filtered = head.get("filter") == "seccomp"
            head, _ = self._read(deadline, 0, "load")
        except HookError as e:
            if e.kind in ("died", "memory"):  # its top-level code ended the process: the file is unusable
                raise HookError(str(e), "load") from None
            raise
        if not head.get("ok"):
            raise HookError(printable(str(head.get("message", "the candidate could not be loaded"))[:4000]), "load")
        hooks, config = head.get("hooks"), head.get("config", {})
        if not (isinstance(hooks, list) and all(isinstance(h, str) for h in hooks) and "compute_advantages" in hooks
                and set(hooks) <= {"compute_advantages", "compute_policy_loss", "shape_rewards"}):
            raise HookError("the hook process answered the load with an impossible list of hooks", "protocol")
        if not (isinstance(config, dict) and _plain(config, CONFIG_DEPTH)):
            raise HookError(f"{self.origin}: CONFIG must be a dict of plain numbers, strings and lists, nested at most "
                            f"{CONFIG_DEPTH} deep", "load")
        self.hooks, self.config = hooks, config
        if filtered:
            self.layers.append("seccomp")

    def _set_limits(self) -> None:
        """Hard rlimits on the process that will run the candidate, set from here: a process without
        capabilities cannot raise them, and they are in place before its code is even sent."""
        assert self.proc is not None  # only start() calls this, right after it started the process
        pid = self.proc.pid
        if self.jailed:  # bwrap -> bwrap (the namespace's init) -> python
            for _ in range(2):
                kids = _children(pid)
                if len(kids) != 1:
                    raise HookError("the jail did not start as expected (no single process inside)", "jail")
                pid = kids[0]
        mb = 1 << 20
        limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, self.limits.file_mb * mb),
                  (resource.RLIMIT_NOFILE, self.limits.open_files)]
        if self.limits.memory_mb is not None:
            limits.append((resource.RLIMIT_AS, _vm_size(pid) + self.limits.memory_mb * mb))
        if self.limits.cpu_s is not None:
            ticks = os.sysconf("SC_CLK_TCK")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            spent = (int(fields[11]) + int(fields[12])) / ticks
            limits.append((resource.RLIMIT_CPU, int(spent) + 1 + int(self.limits.cpu_s)))
        # counted per user namespace: the jail's own threads, not the user's processes. Linux exempts root
        # from it; there the address-space limit caps threads (each maps its stack)
        if self.jailed:
            limits.append((resource.RLIMIT_NPROC, self.threads + 8))
        for res, n in limits:  # CPU: SIGXCPU at the limit, SIGKILL a second later if it is ignored
            resource.prlimit(pid, res, (n, n + 1 if res == resource.RLIMIT_CPU else n))
        self.layers.append("rlimits")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._write({"op": "close"})
            except (OSError, HookError):
                pass
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        for fd in (self._in, self._out):
            if fd >= 0:
                os.close(fd)
        self._in = self._out = -1
        for f in (self._err, self._cpuinfo):
            if f is not None:
                f.close()
        self._err = self._cpuinfo = None

    def _kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    # ----------------------------------------------------------------------------------------------
    # the wire

    def _write(self, header: dict, tensors: dict | None = None, deadline: float | None = None,
               op: str | None = None) -> None:
        op = op or header.get("op", "?")
        try:
            wire.write_frame(self._in, header, tensors,
                             deadline if deadline is not None else min(time.monotonic() + 5.0, self._end))
        except wire.WireError:  # it stopped reading its requests: it is not going to answer either
            self._kill()
            raise HookError(f"{op}: the hook process stopped reading its requests and was killed", "timeout") from None
        except OSError:
            raise self._died(op) from None

    def _read(self, deadline: float, max_bytes: int, op: str) -> tuple[dict, dict[str, Tensor]]:
        try:
            return wire.read_frame(self._out, max_bytes, deadline)
        except wire.WireError as e:
            if e.kind == "timeout":
                self._kill()
                raise HookError(f"{op} did not answer within {self.limits.call_timeout_s:g}s and its process was "
                                f"killed; a hook must run in milliseconds: use vectorised tensor operations and loops "
                                f"that always end" if op not in ("start", "load") else
                                f"the hook process did not {'start' if op == 'start' else 'load the candidate'} "
                                f"within {self.limits.start_timeout_s:g}s and was killed", "timeout") from None
            if e.kind == "closed":
                raise self._died(op) from None
            self._kill()
            raise HookError(f"{op}: the hook process broke the protocol ({e}) and was killed", "protocol") from None

    def _died(self, op: str) -> HookError:
        """The pipe closed: the process ended, or it closed its end on purpose and lives on (killed here)."""
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self._kill()
                return HookError(f"{op}: the hook process closed its pipe without ending and was killed", "protocol")
        self._kill()
        tail = ""
        if self._err is not None:
            self._err.seek(0, os.SEEK_END)
            self._err.seek(max(0, self._err.tell() - TAIL_BYTES))
            tail = printable(self._err.read().decode("utf-8", "replace")).strip()
        how = f"exit code {code}"
        sig = -code if code is not None and code < 0 else code - 128 if self.jailed and code and code > 128 else None
        if sig is not None:  # bwrap reports a signal death as 128 + the signal
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            assert code is not None  # sig is only set from an exit code
            how = f"killed by signal {name}" + (f" (exit code {code})" if code >= 0 else "")
        what = {"start": "the hook process died while starting", "load": "loading the candidate ended the hook process"}
        msg = what.get(op, f"{op} ended the hook process (os._exit, a crash, or a limit it hit)")
        if sig == signal.SIGXCPU:
            msg = f"{op} used up the hook process's CPU time ({self.limits.cpu_s} s in all) and was stopped"
        memoryish = mentions_memory(tail)
        return HookError(f"{msg}; {how}" + (f"\n{tail}" if tail else ""), "memory" if memoryish else "died")

    def call(self, op: str, batch: RolloutBatch, extra: dict[str, Tensor] | None = None,
             max_bytes: int | None = None) -> tuple[dict, dict[str, Tensor]]:
        """Send the batch (and ``extra`` tensors) to hook ``op``; return the checked answer's header and tensors."""
        if self.proc is None or self._in < 0:
            raise HookError(f"{op}: the hook process is not running", "died")
        t0 = time.perf_counter()
        tensors = {k: getattr(batch, k) for k in BATCH_TENSORS}
        tensors.update(extra or {})
        self._write({"op": op, "group_size": int(batch.group_size), "max_len": int(batch.max_len)}, tensors,
                    deadline=min(time.monotonic() + self.limits.call_timeout_s, self._end))
        n, t = batch.mask.shape  # room for a wrong shape to be reported as one, not for a flood
        head, out = self._read(min(time.monotonic() + self.limits.call_timeout_s, self._end),
                               max_bytes if max_bytes is not None else 16 * n * max(t, 1) + (1 << 20), op)
        self.calls += 1
        self.call_s += time.perf_counter() - t0
        if not head.get("ok"):
            kind = head.get("kind")
            if kind not in ("error", "memory", "type"):
                kind = "error"
            message = printable(str(head.get("message", ""))[:4000])
            if kind == "type":
                message = f"{op} must return a torch.Tensor, got {message}" if op != "compute_policy_loss" else message
            raise HookError(message, kind)
        return head, out

    # ----------------------------------------------------------------------------------------------
    # the candidate as an Algorithm the trainer and the verifier can call

    def algorithm(self) -> Algorithm:
        try:
            cfg = AlgoConfig.from_dict(self.config)
        except (TypeError, ValueError) as e:
            raise HookError(f"{self.origin}: bad CONFIG: {e}", "load") from None

        def tensor_hook(op: str, want: str):
            def fn(batch: RolloutBatch, _cfg: AlgoConfig) -> Tensor:
                _, out = self.call(op, batch)
                x = out.get("out")
                if x is None:
                    raise HookError(f"{op}: the hook process answered without a tensor", "protocol")
                if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                    raise HookError(f"{op} must return a floating-point tensor ({want}), got {x.dtype}", "type")
                # float32 before anyone checks finiteness: a float64 1e300 is finite until the trainer casts it
                return x.to(device=batch.mask.device, dtype=torch.float32)
            return fn

        shape = tensor_hook("shape_rewards", "[N]") if "shape_rewards" in self.hooks else None
        loss = self._remote_loss if "compute_policy_loss" in self.hooks else default_policy_loss
        return Algorithm(name=self.name, compute_advantages=tensor_hook("compute_advantages", "[N, T] or [N]"),
                         compute_policy_loss=loss, shape_rewards=shape, config=cfg, source=self.source,
                         origin=self.origin)

    def _remote_loss(self, logp: Tensor, batch: RolloutBatch, advantages: Tensor, cfg: AlgoConfig):
        n, t = logp.shape
        head, out = self.call("compute_policy_loss", batch, {"logp": logp.detach(), "advantages": advantages.detach()},
                              max_bytes=16 * n * max(t, 1) + (1 << 20))
        metrics = {}
        raw_metrics = head.get("metrics")
        for k, v in list((raw_metrics if isinstance(raw_metrics, dict) else {}).items())[:32]:
            try:
                if isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(float(v)):
                    metrics[k[:64]] = float(v)
            except OverflowError:  # an integer too large for a float
                pass
        value, grad = out.get("loss"), out.get("grad")
        if value is None or grad is None or value.dim() != 0 or not value.is_floating_point():
            raise HookError("compute_policy_loss: the hook process answered without a scalar loss", "protocol")
        if tuple(grad.shape) != (n, t) or not grad.is_floating_point():
            raise HookError(f"compute_policy_loss: a gradient of shape {list(grad.shape)} for log-probs of shape "
                            f"{[n, t]}", "protocol")
        value, grad = value.to(logp.dtype), grad.to(logp.dtype)  # cast first: finite in float64 is not enough
        if not torch.isfinite(grad).all():
            raise HookError("compute_policy_loss's gradient with respect to logp is non-finite (NaN or inf); compute "
                            "the loss with numerically safe operations (clamp log-ratios before exp())", "type")
        return surrogate(value, grad, logp), metrics
