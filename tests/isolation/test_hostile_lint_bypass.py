"""Class: getting code past the static check. The check is a lint now, and honest about what it allows;
code that gets past it anyway still runs only in the jail."""

import pytest

from poise.verify import static_check, verify
from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import attack, curves

pytestmark = pytest.mark.usefixtures("jail")

# a string annotation evaluated by typing.get_type_hints runs whatever the string says
TYPE_HINTS = '''import torch
import typing
from poise.algorithms.base import to_tokens

def _probe(x: "open({target!r}, 'w').write('pwned')") -> None:
    return None

def compute_advantages(batch, cfg):
    typing.get_type_hints(_probe)
    return to_tokens(batch.rewards - batch.rewards.mean(), batch.mask)
'''


def test_typing_is_refused_by_the_lint_with_the_fix(tmp_path):
    rep = static_check(TYPE_HINTS.format(target=str(tmp_path / "x")))
    assert not rep.ok and any("`import typing` is not allowed" in e and "from typing import Optional" in e
                              for e in rep.errors), rep.errors
    assert static_check("from typing import Optional\nfrom typing import get_type_hints\n"
                        "def compute_advantages(batch, cfg):\n    return batch.rewards\n").errors[0].count(
        "get_type_hints") == 1


def test_type_hint_code_past_the_lint_cannot_write_outside(tmp_path):
    target = tmp_path / "pwned.txt"
    src = TYPE_HINTS.format(target=str(target))
    assert verify(src, "hints").stage == "static"  # the loop never runs it
    # and where the lint is out of the way, the write happens inside the jail, which cannot see tmp_path
    res = evaluate_source(src)
    assert not target.exists()
    assert getattr(res, "kind", None) == "candidate" and "compute_advantages raised" in res.message


def test_exec_and_getattr_past_the_lint_change_nothing(grpo_smoke, tmp_path):
    target = tmp_path / "pwned.txt"
    src = attack(f"""
        g = getattr(__builtins__, "__import__") if not isinstance(__builtins__, dict) else __builtins__["__import__"]
        g("builtins").exec("open({str(target)!r}, 'w').write('x')")
    """)
    assert not static_check(src).ok
    res = evaluate_source(src)
    assert not target.exists()
    assert res.metrics == grpo_smoke.metrics and curves(res) == curves(grpo_smoke)
