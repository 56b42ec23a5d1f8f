"""Class: ending the hook process (sys.exit, os._exit, a crash, the parent's signal). Each comes back as
a clear message that names the hook, from `poise train FILE` and from the evaluator."""

import subprocess
import sys

import pytest

from poise.backends.worker import AlgorithmSpec, run_evaluation
from tests.isolation.hostile import call_hook

pytestmark = pytest.mark.usefixtures("jail")

GRPO_LIKE = "import torch\n\ndef compute_advantages(batch, cfg):\n    {body}\n    return batch.rewards\n"


@pytest.mark.parametrize("body, words", [
    ("raise SystemExit(3)", ["compute_advantages called sys.exit(3)"]),
    ("import os\n    os._exit(7)", ["compute_advantages ended the hook process", "exit code 7"]),
    ("import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)", ["compute_advantages ended the hook process",
                                                                      "SIGSEGV"]),
    ("raise KeyboardInterrupt", ["compute_advantages raised KeyboardInterrupt"]),
])
def test_every_way_out_names_the_hook(body, words):
    res = call_hook(GRPO_LIKE.format(body=body))
    assert isinstance(res, Exception), res
    for w in words:
        assert w in str(res), (w, str(res))


def test_an_exit_at_load_time_is_a_load_failure():
    res = run_evaluation(AlgorithmSpec("quit", "import os\nos._exit(4)\n", "quit.py"), "smoke", 0, threads=1)
    assert res.kind == "load" and "loading the candidate ended the hook process" in res.message


def test_poise_train_says_which_hook_ended_its_process(tmp_path, smoke_policy):
    f = tmp_path / "quitter.py"
    f.write_text(GRPO_LIKE.format(body="raise SystemExit(3)"))
    r = subprocess.run([sys.executable, "-m", "poise.cli", "train", "-a", str(f), "-f", "smoke", "-o",
                        str(tmp_path / "runs"), "--threads", "1"], capture_output=True, text=True, timeout=300)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "the algorithm failed during training" in out
    assert "compute_advantages called sys.exit(3)" in out and "internal error" not in out and "Traceback" not in out


def test_poise_train_stops_a_file_at_its_time_limit(tmp_path, smoke_policy):
    # every hook call is quick enough for its own deadline, but the whole run is not
    f = tmp_path / "slow.py"
    f.write_text("import torch\nimport math\n\ndef compute_advantages(batch, cfg):\n"
                 "    x = torch.ones(1)\n    for _ in range(3_000_000):\n        x = x + 0.0\n"
                 "    return batch.rewards\n")
    r = subprocess.run([sys.executable, "-m", "poise.cli", "train", "-a", str(f), "-f", "smoke", "-o",
                        str(tmp_path / "runs"), "--threads", "1", "--timeout", "8"], capture_output=True, text=True,
                       timeout=300)
    out = " ".join((r.stdout + r.stderr).split())
    # the wall clock of the run, or the CPU time of the hook process (capped at the same 8 s), stops it
    assert r.returncode == 2, out
    assert ("the evaluation timed out" in out and "longer than 8s" in out) or "CPU time (8 s in all)" in out, out


def test_escape_sequences_in_a_candidates_messages_never_reach_the_terminal():
    res = call_hook(GRPO_LIKE.format(body="raise RuntimeError('\\x1bc\\x1b]0;pwned\\x07\\x1b[2J')"))
    assert isinstance(res, Exception) and "compute_advantages raised RuntimeError" in str(res)
    assert not any(ord(c) < 32 and c not in "\n\t" for c in str(res)) and "\x7f" not in str(res)
