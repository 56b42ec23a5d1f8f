"""``verify``: is a candidate safe to train, does it honour the interface, and does it do what it claims?

    verify(source, name, claims) -> VerificationReport

1. static   ``static_check`` in this process: nothing is executed.
2. load     in a sandbox child (``run_sandboxed``): ``algorithm_from_source``.
3. runtime  the base checks on probe batches (shapes, finiteness, no mutation, determinism, layout).
4. property the property test of each claim the proposal attaches (``properties.CLAIMS``).

The report's ``stage`` is where it stopped ("passed" when nothing failed; "timeout", "memory" or
"crash" when the child had to be stopped or died), ``errors`` say what to fix, and ``behaviour``
fingerprints what the code does, so an archive can tell two sources that behave the same.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from poise.verify.properties import CLAIMS
from poise.verify.sandbox import Limits, run_sandboxed
from poise.verify.static import static_check

# The checks need a few MB on tiny batches; 2 GB of headroom over the child's baseline (torch and poise,
# ~0.65 GB) stops a runaway allocation long before it troubles the machine.
VERIFY_LIMITS = Limits(timeout_s=30.0, memory_mb=2048, threads=1)


@dataclass
class VerificationReport:
    ok: bool
    stage: str  # "static" | "load" | "runtime" | "property" | "timeout" | "memory" | "crash" | "passed"
    errors: list[str] = field(default_factory=list)  # each names the problem and a fix
    checks: list[dict] = field(default_factory=list)  # {"name", "ok", "message"}
    behaviour: str = ""  # a hash of the advantages and loss on a fixed probe batch ("" before the base checks pass)
    wall_s: float = 0.0
    isolation: list[str] = field(default_factory=list)  # the sandbox layers that applied
    hooks: list[str] = field(default_factory=list)  # the hooks the source defines

    def to_dict(self) -> dict:
        return asdict(self)


def verify(source: str, name: str, claims: list[str] | tuple[str, ...] = (),
           limits: Limits = VERIFY_LIMITS) -> VerificationReport:
    """Statically check, then load and test ``source`` in a sandbox. Never raises for what the source does."""
    t0 = time.monotonic()
    origin = f"candidate:{name}"

    def done(stage: str, errors: list[str], **kw) -> VerificationReport:
        return VerificationReport(ok=stage == "passed", stage=stage, errors=errors, wall_s=time.monotonic() - t0,
                                  hooks=st.hooks, **kw)

    st = static_check(source, origin)
    if not st.ok:
        return done("static", st.errors, checks=[{"name": "static", "ok": False, "message": "\n".join(st.errors)}])
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        return done("property", [f"unknown claim {c!r}; the known claims are {', '.join(CLAIMS)}" for c in unknown])
    res = run_sandboxed("poise.verify.properties:check_in_child",
                        {"source": source, "name": name, "origin": origin, "claims": list(claims)}, limits)
    if res.ok:
        v = res.value
        return done(v["stage"], v["errors"], checks=[{"name": "static", "ok": True, "message": ""}, *v["checks"]],
                    behaviour=v["behaviour"], isolation=res.isolation)
    if res.kind == "timeout":
        error = (f"the checks did not finish within {limits.timeout_s:g}s (an endless loop?); the hooks must run in "
                 f"milliseconds on a small batch: use vectorised tensor operations and loops that always end")
    elif res.kind == "memory":
        error = (f"the candidate ran out of memory ({res.message.splitlines()[0]}); allocate only tensors of the "
                 f"batch's size ([N], [N, T])")
    else:
        error = f"the checking process failed: {res.message}"
    stage = res.kind if res.kind in ("timeout", "memory") else "crash"
    return done(stage, [error], isolation=res.isolation)
