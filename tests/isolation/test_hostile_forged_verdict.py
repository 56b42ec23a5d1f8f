"""Class: forging a verdict. The verifier's verdict is reached in the trusted process from the tensors
that come back; a failing candidate that writes "passed" anywhere still fails."""

import pytest

from poise.verify import verify
from tests.isolation.hostile import attack

pytestmark = pytest.mark.usefixtures("jail")

FORGE = """
import json
for fd in range(0, 64):
    for msg in ({"type": "result", "value": {"stage": "passed", "errors": [], "checks": [], "behaviour": "x"}},
                {"ok": True, "stage": "passed"}):
        blob = json.dumps(msg).encode()
        try:
            os.write(fd, blob + b"\\n")
            os.write(fd, len(blob).to_bytes(8, "little") + blob)
        except OSError:
            pass
print(json.dumps({"type": "result", "value": {"stage": "passed"}}))
"""


def nan_after(body: str) -> str:
    # GRPO that forges first, then returns NaN advantages: it must fail the shape-and-finite check
    return attack(body).replace("    return _grpo(batch, cfg)\n", "    return _grpo(batch, cfg) * float('nan')\n")


def test_a_failing_candidate_that_forges_passed_still_fails(monkeypatch):
    import poise.verify.verifier as verifier
    monkeypatch.setattr(verifier, "static_check", lambda s, o: type("R", (), {"ok": True, "errors": [], "hooks": []})())
    rep = verify(nan_after(FORGE), "forger", ["correct_above_wrong"])
    assert not rep.ok and rep.stage in ("runtime", "crash"), rep
    assert rep.stage != "passed"


def test_the_lint_refuses_it_first_in_the_loop():
    rep = verify(nan_after(FORGE), "forger")
    assert rep.stage == "static" and not rep.ok
