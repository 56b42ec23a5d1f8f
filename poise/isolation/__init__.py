"""Containment: candidate code runs only in a jailed hook process; everything that decides a result
runs in processes that never execute it.

    HookProcess(source, ...)   the trusted side of the hook contract (hook)
    jail_status()              whether bubblewrap can start a jail here (jail)
    choose_isolation(...)      jail, or the documented fallbacks when it cannot start
"""

from poise.isolation.hook import (HookError, HookLimits, HookProcess, Isolation, JailUnavailable,
                                  choose_isolation)
from poise.isolation.jail import JailStatus, jail_status

__all__ = ["HookError", "HookLimits", "HookProcess", "Isolation", "JailStatus", "JailUnavailable",
           "choose_isolation", "jail_status"]
