"""Class: abusing the trusted side's reader. Whatever the hook process sends, the trusted side raises
HookError (or the verifier reports a failed stage): never another exception, never a large allocation."""

import pytest

from poise.isolation.hook import HookError
from poise.verify import verify
from tests.isolation.hostile import attack, call_hook

pytestmark = pytest.mark.usefixtures("jail")


def forge_load(answer: str) -> str:
    # replaces the server's answer to "load" with a forged one, at the candidate's import time
    return attack("pass", imports=f"""
import poise.isolation.wire as wire
_real = wire.write_frame
def _forge(fd, header, tensors=None):
    if header.get("ok") and "hooks" in header:
        header = {answer}
    _real(fd, header, tensors)
wire.write_frame = _forge
""")


@pytest.mark.parametrize("answer", [
    '{"ok": True, "hooks": [["compute_advantages"]], "config": {}, "layers": []}',
    '{"ok": True, "hooks": ["compute_advantages"], "config": "x"}',
    '{"ok": True, "hooks": "compute_advantages", "config": {}}',
    '{"ok": True, "hooks": ["compute_advantages"], "config": [], "layers": []}',
    '{"ok": True, "hooks": ["compute_advantages"], "config": {"extra": __import__("functools").reduce('
    'lambda a, _: [a], range(700), 0)}, "layers": []}',
    '{"ok": True, "hooks": ["compute_advantages", "os.system"], "config": {}, "layers": []}',
])
def test_forged_load_answers_are_hook_errors(answer):
    res = call_hook(forge_load(answer))
    assert isinstance(res, HookError) and res.kind in ("protocol", "load"), res


@pytest.mark.parametrize("shape", ["[2**31 - 1] * 3 + [0]", "[0] + [2**31 - 1] * 7", "[-1]", "[1.5]", "[True]"])
def test_impossible_shapes_are_protocol_errors(shape):
    src = attack("pass", imports=f"""
import json, os
import poise.isolation.wire as wire
_real = wire.write_frame
def _forge(fd, header, tensors=None):
    if tensors and "out" in tensors:
        head = json.dumps({{"ok": True, "tensors": [{{"name": "out", "dtype": "float32", "shape": {shape}}}]}}).encode()
        os.write(fd, len(head).to_bytes(8, "little") + head)
        return
    _real(fd, header, tensors)
wire.write_frame = _forge
""")
    res = call_hook(src)
    assert isinstance(res, HookError) and res.kind == "protocol", res


def test_the_verifier_turns_a_forged_load_into_a_failed_stage_not_an_exception(monkeypatch):
    import poise.verify.verifier as verifier
    monkeypatch.setattr(verifier, "static_check", lambda s, o: type("R", (), {"ok": True, "errors": [], "hooks": []})())
    rep = verify(forge_load('{"ok": True, "hooks": [{"a": 1}], "config": {}, "layers": []}'), "forged")
    assert not rep.ok and rep.stage in ("crash", "load"), rep


@pytest.mark.parametrize("value", ["10**400", "-(10**400)", "float('inf')"])
def test_a_config_that_would_overflow_the_trainer_is_a_load_error(value):
    # the candidate's process can skip every check of its own (here its AlgoConfig.validate is replaced):
    # the trusted side validates the CONFIG it receives, so a number the trainer's arithmetic cannot take
    # is the candidate's bad CONFIG, never an internal error of the trainer
    src = ("import poise.algorithms.base as b\nb.AlgoConfig.validate = lambda self: None\n"
           f"CONFIG = {{'kl_coef': {value}}}\n\ndef compute_advantages(batch, cfg):\n    return batch.rewards\n")
    res = call_hook(src)
    assert isinstance(res, HookError) and res.kind == "load", res
    assert "CONFIG" in str(res), res
