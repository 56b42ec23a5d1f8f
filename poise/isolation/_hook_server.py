"""The hook process: ``python -P -m poise.isolation._hook_server IN_FD OUT_FD``, jailed (``jail``).

It holds the candidate's code and nothing else: no policy, optimiser, evaluator, archive or cache. It
reads frames (``wire``) on IN_FD and answers on OUT_FD:

    -> (started)                                  <- {"ready": true}
    -> {"op": "load", source, name, origin, threads, seccomp}
                                                  <- {"filter": "seccomp" or ""} (before the candidate runs)
                                                  <- {"ok", "hooks", "config"} or {"ok": false, ...}
    -> {"op": "shape_rewards" | "compute_advantages", batch}   <- {"ok"} + tensor "out"
    -> {"op": "compute_policy_loss", batch, logp, advantages}  <- {"ok", "metrics"} + "loss", "grad"

Everything here runs in the same process as the candidate, so nothing here is trusted: the trusted side
checks every answer (``hook``). Between "ready" and "load" the trusted side sets this process's rlimits
from outside; on "load" it installs the seccomp filter on itself, then executes the candidate.
"""

from __future__ import annotations

import json
import linecache
import math
import os
import sys
import traceback
from typing import Any, Callable

import torch

from poise.algorithms import AlgorithmError, algorithm_from_source
from poise.algorithms.base import AlgoConfig, RolloutBatch, default_policy_loss
from poise.isolation import wire
from poise.isolation.process import is_memory_error

BATCH_TENSORS = ("rewards", "correct", "valid", "lengths", "mask", "group_ids", "old_logp", "ref_logp", "entropy",
                 "truncated")
MAX_REQUEST = 1 << 30  # the trusted side sends what the trainer has; this only stops nonsense


def describe(e: BaseException, origin: str) -> str:
    """'raised TypeError: message (origin line 12: `code`)', at the innermost frame in the candidate's source."""
    text = f"raised {type(e).__name__}: {e}"
    if isinstance(e, SystemExit):
        text = f"called sys.exit({e.code!r}) (a hook must return its result, never end the process)"
    for f in reversed(traceback.extract_tb(e.__traceback__)):
        if f.filename == origin:
            line = (f.line or "").strip()
            return text + (f" ({origin} line {f.lineno}: `{line}`)" if line else f" ({origin} line {f.lineno})")
    return text


def install_seccomp() -> str:
    """Deny what a tensor function never needs (``jail.DENIED_SYSCALLS``), for every thread. Returns the
    layer's name, or "" where libseccomp is not available (the trusted side then records its absence)."""
    try:
        import errno

        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError):
        return ""
    from poise.isolation.jail import DENIED_SYSCALLS

    pid = os.getpid()
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.CTL_TSYNC, 1)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, OSError, RuntimeError):  # a syscall this architecture does not have
            pass
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # flags behind a pointer: make glibc use clone
    f.add_rule(sc.ERRNO(errno.EPERM), "clone")  # threads too: torch's pool is already running
    f.add_rule(sc.ERRNO(errno.EPERM), "kill", sc.Arg(0, sc.NE, pid))
    f.add_rule(sc.ERRNO(errno.EPERM), "tgkill", sc.Arg(0, sc.NE, pid))
    f.add_rule(sc.ERRNO(errno.EPERM), "prlimit64", sc.Arg(2, sc.NE, 0))  # reading limits is fine
    f.load()
    return "seccomp"


def batch_from(header: dict, t: dict[str, torch.Tensor]) -> RolloutBatch:
    return RolloutBatch(**{k: t[k] for k in BATCH_TENSORS}, group_size=int(header["group_size"]),
                        max_len=int(header["max_len"]))


def main(in_fd: int, out_fd: int) -> None:
    def send(header: dict, tensors: dict | None = None) -> None:
        wire.write_frame(out_fd, header, tensors)

    try:  # die with the process that started it (the jail does this too; unjailed, only this does)
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    send({"ready": True})
    header, _ = wire.read_frame(in_fd, MAX_REQUEST)
    torch.set_num_threads(int(header["threads"]))
    # start torch's thread pool (OpenMP's team, at its full size) before the filter forbids new threads
    torch.ones(1 << 22).sum()
    torch.ones(256, 256) @ torch.ones(256, 256)
    # said before any candidate code runs, so the candidate cannot forge what is recorded about the filter
    send({"filter": install_seccomp() if header.get("seccomp") else ""})
    origin = header["origin"]
    source = header["source"]
    linecache.cache[origin] = (len(source), None, source.splitlines(True), origin)  # messages quote its lines
    try:
        algo = algorithm_from_source(header["source"], header["name"], origin)
    except AlgorithmError as e:
        send({"ok": False, "kind": "load", "message": str(e)})
        return
    except BaseException as e:  # SystemExit, KeyboardInterrupt at import time
        send({"ok": False, "kind": "load", "message": f"{origin}: failed while loading: it {describe(e, origin)}"})
        return
    config = {k: v for k, v in vars(algo.config).items()}
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as e:
        send({"ok": False, "kind": "load", "message": f"{origin}: CONFIG must hold plain numbers, strings, lists "
                                                      f"and dicts ({e})"})
        return
    send({"ok": True, "hooks": algo.hooks, "config": config})
    # the hooks take different arguments: each op's call below passes the ones its hook takes
    fns: dict[str, Callable[..., Any] | None] = {
        "shape_rewards": algo.shape_rewards, "compute_advantages": algo.compute_advantages,
        "compute_policy_loss": algo.compute_policy_loss}
    while True:
        header, t = wire.read_frame(in_fd, MAX_REQUEST)
        op = header.get("op")
        if op == "close":
            return
        fn = fns.get(op) if op is not None else None
        if fn is None or (op == "compute_policy_loss" and fn is default_policy_loss):
            send({"ok": False, "kind": "protocol", "message": f"no hook {op!r}"})
            continue
        cfg = AlgoConfig.from_dict(config)  # a fresh copy each call: no state carried in the config
        try:
            batch = batch_from(header, t)
            if op == "compute_policy_loss":
                logp = t["logp"].clone().requires_grad_(True)
                out = fn(logp, batch, t["advantages"], cfg)
                send(*policy_loss_answer(out, logp))
            else:
                out = fn(batch, cfg)
                if not isinstance(out, torch.Tensor):
                    send({"ok": False, "kind": "type", "message": type(out).__name__})
                else:
                    send({"ok": True}, {"out": out.detach()})
        except BaseException as e:
            send({"ok": False, "kind": "memory" if is_memory_error(e) else "error",
                  "message": f"{op} {describe(e, origin)}"[:4000]})


def policy_loss_answer(out, logp: torch.Tensor) -> tuple[dict, dict]:
    if not (isinstance(out, tuple) and len(out) == 2):
        return {"ok": False, "kind": "type", "message": "compute_policy_loss must return (loss, metrics_dict), got "
                                                        f"{type(out).__name__}"}, {}
    loss, info = out
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = f"shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        return {"ok": False, "kind": "type", "message": f"compute_policy_loss must return a scalar tensor loss, got "
                                                        f"{got}"}, {}
    if not loss.requires_grad:
        return {"ok": False, "kind": "type", "message": "compute_policy_loss returned a loss with no gradient: it "
                                                        "must be computed from `logp` (no .detach() or .item())"}, {}
    (grad,) = torch.autograd.grad(loss, logp, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(logp)
    metrics = {}
    if isinstance(info, dict):
        for k, v in list(info.items())[:32]:
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = float(v)
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                metrics[k[:64]] = float(v)
    return {"ok": True, "metrics": metrics}, {"loss": loss.detach(), "grad": grad}


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), int(sys.argv[2]))
    except wire.WireError:  # the trusted side went away
        pass
    sys.stdout.flush()
    os._exit(0)
