"""``verify``: does a candidate honour the interface, and does it do what it claims?

    verify(source, name, claims, jailed=True) -> VerificationReport

1. lint      ``static_check`` in this process: nothing is executed; early, friendly messages.
2. load      the candidate is loaded in its jailed hook process (``poise.isolation.hook``).
3. runtime   the base checks on probe batches (shapes, finiteness, determinism, layout).
4. property  the property test of each claim the proposal attaches (``properties.CLAIMS``).

Candidate code runs only in the hook process. The probe batches are built here, sent there, and the
verdict is reached here on what comes back: nothing the candidate writes can be taken for a verdict.

The report's ``stage`` is where it stopped ("passed" when nothing failed; "timeout", "memory" or
"crash" when the hook process had to be stopped or died), ``errors`` say what to fix, and ``behaviour``
fingerprints what the code does, so an archive can tell two sources that behave the same.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from poise.isolation.hook import HookError, HookLimits, HookProcess
from poise.isolation.process import Limits
from poise.verify.properties import CLAIMS, run_checks
from poise.verify.static import static_check

# The checks take about a second on tiny batches; 2 GB of headroom over the hook process's baseline
# stops a runaway allocation long before it troubles the machine.
VERIFY_LIMITS = Limits(timeout_s=30.0, memory_mb=2048, threads=1)


@dataclass
class VerificationReport:
    ok: bool
    stage: str  # "static" | "load" | "runtime" | "property" | "timeout" | "memory" | "crash" | "passed"
    errors: list[str] = field(default_factory=list)  # each names the problem and a fix
    checks: list[dict] = field(default_factory=list)  # {"name", "ok", "message"}
    behaviour: str = ""  # a hash of the advantages and loss on a fixed probe batch ("" before the base checks pass)
    wall_s: float = 0.0
    isolation: list[str] = field(default_factory=list)  # the containment layers that applied
    hooks: list[str] = field(default_factory=list)  # the hooks the source defines
    config: dict = field(default_factory=dict)  # the CONFIG as the trusted side loaded it ({} before it loads)

    def to_dict(self) -> dict:
        return asdict(self)


def verify(source: str, name: str, claims: list[str] | tuple[str, ...] = (),
           limits: Limits = VERIFY_LIMITS, jailed: bool = True) -> VerificationReport:
    """Lint ``source``, load it in a hook process and check it from here. Never raises for what the source does."""
    t0 = time.monotonic()
    origin = f"candidate:{name}"
    hook = None

    def done(stage: str, errors: list[str], **kw) -> VerificationReport:
        return VerificationReport(ok=stage == "passed", stage=stage, errors=errors, wall_s=time.monotonic() - t0,
                                  hooks=st.hooks, isolation=hook.layers if hook is not None else [], **kw)

    st = static_check(source, origin)
    if not st.ok:
        return done("static", st.errors, checks=[{"name": "static", "ok": False, "message": "\n".join(st.errors)}])
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        return done("property", [f"unknown claim {c!r}; the known claims are {', '.join(CLAIMS)}" for c in unknown])
    hook = HookProcess(source, name, origin, jailed=jailed, threads=limits.threads,
                       limits=HookLimits(call_timeout_s=limits.timeout_s, total_s=limits.timeout_s,
                                         memory_mb=limits.memory_mb, cpu_s=int(limits.timeout_s) + 1))
    try:
        hook.start()
        algo = hook.algorithm()
        v = run_checks(algo, list(claims))
        return done(v["stage"], v["errors"], checks=[{"name": "static", "ok": True, "message": ""}, *v["checks"]],
                    behaviour=v["behaviour"], config=asdict(algo.config))
    except HookError as e:
        if e.kind == "load":
            return done("load", [str(e)], checks=[{"name": "static", "ok": True, "message": ""},
                                                  {"name": "loads", "ok": False, "message": str(e)}])
        if e.kind == "timeout":
            return done("timeout", [f"the checks did not finish within {limits.timeout_s:g}s (an endless loop?); the "
                                    f"hooks must run in milliseconds on a small batch: use vectorised tensor operations "
                                    f"and loops that always end"])
        if e.kind == "memory":
            return done("memory", [f"the candidate ran out of memory ({str(e).splitlines()[0]}); allocate only tensors "
                                   f"of the batch's size ([N], [N, T])"])
        return done("crash", [f"the hook process failed: {e}"])
    except Exception as e:  # the hook answered something the checks could not digest: never end the run
        return done("crash", [f"the checks could not use what the hook process answered ({type(e).__name__}: "
                              f"{str(e)[:300]})"])
    finally:
        hook.close()
