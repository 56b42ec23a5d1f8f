"""The static check: what it rejects (each with the line and a fix) and what it lets through."""

import pytest

from poise.algorithms import BUILTINS, builtin_source
from poise.verify.static import static_check

HEADER = "import torch\nfrom poise.algorithms.base import group_mean, to_tokens\n\n"
GOOD = HEADER + "def compute_advantages(batch, cfg):\n    return to_tokens(batch.rewards - group_mean(batch.rewards, batch.group_ids), batch.mask)\n"


def body(*lines: str) -> str:
    """A candidate whose compute_advantages runs ``lines`` (from line 5 on) before a valid return."""
    return HEADER + "def compute_advantages(batch, cfg):\n" + "".join(f"    {l}\n" for l in lines) + \
        "    return batch.rewards\n"


def errors(src: str) -> str:
    rep = static_check(src, "cand.py")
    assert not rep.ok
    return "\n".join(rep.errors)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_passes(name):
    rep = static_check(builtin_source(name), name)
    assert rep.ok, rep.errors
    assert "compute_advantages" in rep.hooks


def test_hooks_are_listed():
    src = GOOD + "def shape_rewards(batch, cfg):\n    return batch.rewards\n" \
                 "def compute_policy_loss(logp, batch, advantages, cfg):\n    return (logp * advantages).mean(), {}\n"
    assert static_check(src).hooks == ["compute_advantages", "compute_policy_loss", "shape_rewards"]


def test_allowed_forms_pass():
    src = ('"""doc"""\nfrom __future__ import annotations\nimport math\nimport torch.nn.functional as F\n'
           'from torch import Tensor\nfrom poise.algorithms.base import group_std, aggregate\n'
           'EPS = 1e-6\nCONFIG = {"clip_high": 0.28, "knobs": [1, 2], "eps": EPS}\n\n'
           'def _helper(x, k=2):\n    return F.softplus(x) * k\n\n'
           'def compute_advantages(batch, cfg):\n    adv = batch.rewards.clone()\n    adv[batch.correct] = 0\n'
           '    i = 0\n    while True:\n        i += 1\n        if i > 2:\n            break\n'
           '    f = lambda t: t * math.sqrt(2.0)\n    return f(_helper(adv)).clamp(-5, 5)\n')
    rep = static_check(src)
    assert rep.ok, rep.errors


def test_a_syntax_error_names_the_line():
    msg = errors(HEADER + "def compute_advantages(batch, cfg)\n    return 1\n")
    assert "cand.py line 4: syntax error" in msg


@pytest.mark.parametrize("stmt", ["import os", "import subprocess", "import socket", "import sqlite3",
                                  "from os import system", "import importlib", "import pickle",
                                  "import ctypes", "import builtins", "from pathlib import Path"])
def test_imports_outside_the_allowlist_are_rejected(stmt):
    msg = errors(stmt + "\n" + GOOD)
    assert f"line 1: `{stmt}` is not allowed" in msg and "may import only" in msg


def test_base_is_importable_only_for_its_public_helpers():
    assert "not one of its public helpers" in errors("from poise.algorithms.base import dataclasses\n" + GOOD)
    assert "`import poise.algorithms.base` is not allowed" in errors("import poise.algorithms.base\n" + GOOD)


@pytest.mark.parametrize("call", ["open('/etc/passwd')", "exec('1')", "eval('1')", "getattr(torch, 'load')",
                                  "__import__('os')", "globals()", "vars(batch)", "type(batch)", "breakpoint()",
                                  "compile('1', 'x', 'eval')", "object()"])
def test_dangerous_builtins_are_rejected(call):
    msg = errors(body(f"x = {call}"))
    assert "line 5:" in msg and ("builtin" in msg or "interpreter internals" in msg)


@pytest.mark.parametrize("expr", ["batch.__class__", "batch.rewards.__class__.__subclasses__()",
                                  "compute_advantages.__globals__", "torch._C", "__builtins__"])
def test_private_and_dunder_access_is_rejected(expr):
    msg = errors(body(f"x = {expr}"))
    assert "line 5:" in msg and ("private attribute" in msg or "interpreter internals" in msg)


@pytest.mark.parametrize("expr", ["torch.load('w.pt')", "torch.save(batch.rewards, 'w.pt')", "torch.hub",
                                  "torch.utils.data", "torch.ops.aten", "torch.jit.script", "torch.cuda.is_available()",
                                  "torch.manual_seed(0)", "torch.random.seed()", "torch.autograd.grad",
                                  "torch.os.system('x')", "torch.sys.modules", "F.importlib",
                                  "batch.rewards.numpy().tofile('x')", "torch.from_file('x')",
                                  "torch.UntypedStorage", "torch.distributed", "torch.multiprocessing"])
def test_torch_escapes_are_rejected(expr):
    msg = errors(body(f"x = {expr}"))
    assert "line 5:" in msg and "reaches outside pure tensor math" in msg


@pytest.mark.parametrize("expr", ["torch.set_num_threads(8)", "torch.set_default_dtype(torch.float64)",
                                  "torch.set_grad_enabled(False)", "torch.nn.modules.module.register_module_forward_hook(None)"])
def test_global_settings_and_hooks_are_rejected(expr):
    assert "changes a global setting" in errors(body(f"x = {expr}"))


def test_monkey_patching_torch_is_rejected():
    msg = errors("import torch\ntorch.exp = lambda x: x\n" + GOOD.replace("import torch\n", ""))
    assert "line 2: assignment to the attribute `.exp`" in msg and "bind a local variable" in msg


@pytest.mark.parametrize("stmt", ["batch.rewards = batch.rewards * 2", "cfg.eps += 1.0", "del batch.mask",
                                  "batch.rewards[0] = 5.0", "cfg.extra['state'] = 1"])
def test_writing_into_inputs_is_rejected(stmt):
    msg = errors(body(stmt))
    assert "line 5:" in msg and ("assignment to the attribute" in msg or "modifies the input" in msg)


def test_global_and_nonlocal_are_rejected():
    assert "line 5: a `global` statement" in errors(body("global STATE"))
    src = HEADER + "def compute_advantages(batch, cfg):\n    n = 0\n    def inc():\n        nonlocal n\n" \
                   "        n += 1\n    inc()\n    return batch.rewards\n"
    assert "line 7: a `nonlocal` statement" in errors(src)


@pytest.mark.parametrize("stmt, phrase", [("print('loading')", "`print('loading')` at the top level"),
                                          ("X = torch.zeros(3)", "a call at the top level"),
                                          ("for i in range(3):\n    pass", "`for i in range(3):` at the top level"),
                                          ("CONFIG = {k: 1 for k in 'ab'}", "a call at the top level")])
def test_loading_must_not_run_work(stmt, phrase):
    assert phrase in errors(GOOD + stmt + "\n")


def test_decorators_and_call_defaults_are_rejected():
    assert "decorator on `compute_advantages`" in errors(GOOD.replace("def compute_advantages", "@torch.no_grad()\ndef compute_advantages"))
    assert "default value of `compute_advantages`" in errors(GOOD.replace("(batch, cfg)", "(batch, cfg, x=torch.zeros(1))"))


def test_the_interface_is_checked():
    assert "no top-level `def compute_advantages(batch, cfg)`" in errors(HEADER + "def advantages(batch, cfg):\n    return 0\n")
    msg = errors(HEADER + "def compute_advantages(batch):\n    return batch.rewards\n")
    assert "`compute_advantages(batch)` has the wrong signature" in msg and "def compute_advantages(batch, cfg):" in msg
    msg = errors(GOOD + "def compute_policy_loss(logp, batch):\n    return logp.mean(), {}\n")
    assert "def compute_policy_loss(logp, batch, advantages, cfg):" in msg


@pytest.mark.parametrize("line, phrase", [
    ("x = torch.ByteStorage(1).type('builtins.exec')", "`.ByteStorage`"),
    ("x = batch.rewards.type('builtins.eval')", "`.type`"),
    ("x = torch.CompilationUnit('def f(x):\\n    return x')", "`.CompilationUnit`"),
])
def test_nothing_the_lint_allows_turns_text_into_code(line, phrase):
    src = f"import torch\n\ndef compute_advantages(batch, cfg):\n    {line}\n    return batch.rewards\n"
    rep = static_check(src)
    assert not rep.ok and any(phrase in e for e in rep.errors), rep.errors


def test_control_characters_in_the_source_are_refused():
    rep = static_check("import torch\n# \x1b]0;pwned\x07\ndef compute_advantages(batch, cfg):\n    return batch.rewards\n")
    assert not rep.ok and "control character U+001B" in rep.errors[0] and "line 2" in rep.errors[0]


def test_the_config_literal_is_the_last_assignment_and_never_raises():
    from poise.verify.static import config_literal
    assert config_literal("CONFIG = {'dynamic_sampling': 2}\nCONFIG = {'clip_high': 0.28}\n") == '{"clip_high": 0.28}'
    assert config_literal("CONFIG = {'a': {1, 2}}\n") == "{'a': {1, 2}}"  # not JSON: still the module's own text
    assert config_literal("CONFIG = {(1, 2): 3}\n") == "{(1, 2): 3}"
    assert config_literal("x = 1\n") == config_literal("CONFIG = f()\n") == "{}"

