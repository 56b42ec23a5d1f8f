"""Containment: candidate code runs only in a jailed hook process; everything that decides a result
runs in processes that never execute it.

    HookProcess(source, ...)   the trusted side of the hook contract (hook)
    jail_status()              whether bubblewrap can start a jail here (jail)
    choose_isolation(...)      jail, or the documented fallbacks when it cannot start
    printable(text)            candidate text made safe for terminals (text)

Names are imported on first use, so that `poise --help` and the views do not import torch.
"""

import importlib

_WHERE = {"HookError": "hook", "HookLimits": "hook", "HookProcess": "hook", "Isolation": "hook",
          "JailUnavailable": "hook", "choose_isolation": "hook", "JailStatus": "jail", "jail_status": "jail",
          "printable": "text"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"poise.isolation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'poise.isolation' has no attribute {name!r}")


__all__ = sorted(_WHERE)
