"""Verification of candidate algorithms before they are trained: lint, then check from outside.

    static_check(source)                  early, friendly messages about code that cannot work (a lint,
                                          not a boundary: the hook process's jail is the boundary)
    verify(source, name, claims)          the lint, then base checks and the proposal's claimed properties
                                          on probe batches sent to the candidate's hook process (verifier)
"""

from poise.verify.properties import CLAIMS
from poise.verify.static import StaticReport, static_check
from poise.verify.verifier import VERIFY_LIMITS, VerificationReport, verify

__all__ = ["CLAIMS", "StaticReport", "VERIFY_LIMITS", "VerificationReport", "static_check", "verify"]
