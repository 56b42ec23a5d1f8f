"""Class: changing the score from inside the candidate: patching the evaluator, the trainer or the
metrics at import time, or answering for the trusted side. None of them lives in the hook process."""

import json
import subprocess
import sys

import pytest

from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import FORGED_ZEROS, attack, curves

pytestmark = pytest.mark.usefixtures("jail")

PATCHES = """
import poise.backends.tiny as tiny
import poise.sandbox.benchmark as bench
import poise.sandbox.trainer as trainer
import poise.evaluation.metrics as metrics
def perfect(*a, **k):
    return {"overall": 100.0, "tiers": {}}
tiny.evaluate_policy = perfect
bench.evaluate_policy = perfect
trainer.train_rl = lambda *a, **k: []
metrics.overall = lambda *a, **k: 100.0
"""


def test_patching_the_evaluator_at_import_time_changes_nothing(grpo_smoke):
    src = attack("pass", imports=PATCHES)
    res = evaluate_source(src)
    assert res.metrics == grpo_smoke.metrics and curves(res) == curves(grpo_smoke)
    assert res.metrics["overall"] < 100


def test_patching_at_call_time_through_sys_modules_changes_nothing(grpo_smoke):
    src = attack("""
        import sys
        for name, mod in list(sys.modules.items()):
            if name.startswith("poise") and hasattr(mod, "evaluate_policy"):
                mod.evaluate_policy = lambda *a, **k: {"overall": 100.0}
    """)
    res = evaluate_source(src)
    assert res.metrics == grpo_smoke.metrics


def test_poise_train_refuses_the_file_with_a_message_and_no_score(tmp_path):
    f = tmp_path / "tamper.py"
    f.write_text(attack("pass", imports=PATCHES))
    r = subprocess.run([sys.executable, "-m", "poise.cli", "train", "-a", str(f), "-f", "smoke", "-o",
                        str(tmp_path / "runs"), "--threads", "1"], capture_output=True, text=True, timeout=300)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "cannot be trained" in out and "`import poise.backends.tiny` is not allowed" in out
    assert not list(tmp_path.glob("runs/*/summary.json"))
    assert "100.0" not in out and "Traceback" not in out


def test_answers_forged_for_the_trusted_side_are_only_the_candidates_own_outputs(grpo_smoke):
    # the candidate owns its process, so it can answer anything; what comes back is checked and used as
    # its advantages, never as a score or a verdict: here, forged "perfect" answers train as zeros
    src = attack(FORGED_ZEROS)
    res = evaluate_source(src)
    assert not hasattr(res, "kind"), res
    assert all(r["adv_abs_mean"] == 0 for r in res.trajectory)  # the trainer used what it got: zeros
    assert res.metrics["overall"] != 100.0 and "verdict" not in json.dumps(res.to_dict())
