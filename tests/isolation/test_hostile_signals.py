"""Class: killing the parent or anything else. The hook process lives in its own PID namespace with a
filter that lets it signal only itself: the trainer and the verifier survive every attempt."""

import os

import pytest

from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import attack, call_hook, curves

pytestmark = pytest.mark.usefixtures("jail")

KILLS = f"""
import signal
for pid in (os.getppid(), 1, -1, 0, {os.getpid()}, -{os.getpgid(0)}):
    for fn in (os.kill, os.killpg):
        try:
            fn(pid, signal.SIGKILL)
        except BaseException:
            pass
"""


def test_the_caller_survives_every_kill():
    res = call_hook(attack(KILLS))
    assert not isinstance(res, Exception), res  # the hook answered: even its own namespace's init survived


def test_an_evaluation_survives_and_scores_like_grpo(grpo_smoke):
    res = evaluate_source(attack(KILLS))
    assert res.metrics == grpo_smoke.metrics and curves(res) == curves(grpo_smoke)
