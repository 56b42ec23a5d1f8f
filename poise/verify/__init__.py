"""Verification of candidate algorithms before they are trained: contain, check, and test claims.

    static_check(source)                      reject unsafe or malformed code without running it (static)
    run_sandboxed("mod:fn", payload, Limits)  run a function in a contained child process (sandbox)
    verify(source, name, claims)              static check, then base checks and the proposal's claimed
                                              properties on probe batches, in a sandbox (verifier)
"""

from poise.verify.properties import CLAIMS
from poise.verify.sandbox import Limits, SandboxResult, netns_available, run_sandboxed
from poise.verify.static import StaticReport, static_check
from poise.verify.verifier import VERIFY_LIMITS, VerificationReport, verify

__all__ = ["CLAIMS", "Limits", "SandboxResult", "StaticReport", "VERIFY_LIMITS", "VerificationReport",
           "netns_available", "run_sandboxed", "static_check", "verify"]
