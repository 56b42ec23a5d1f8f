"""Class by class, the attacks of this suite against the TRL backend's trainer: the candidate runs in the
same jailed hook process there, and TRL's process must be as untouchable as the sandbox's. Each run is a
small Llama built here, two steps, one thread: an attack that changed nothing gives GRPO's numbers to
the bit."""

import json
import os
import textwrap
import time

import pytest

pytest.importorskip("trl")

from poise.backends import BackendSpec  # noqa: E402
from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation  # noqa: E402
from tests.isolation.hostile import FORGED_ZEROS, MARKER, Listeners, attack, curves, files_under  # noqa: E402
from tests.isolation.hostile import package_digest, processes_with, writes  # noqa: E402

pytestmark = pytest.mark.usefixtures("jail")

TRL = BackendSpec("trl", "trl", {
    "model": {"name": "random", "hidden": 32, "layers": 2, "heads": 2, "intermediate": 64},
    "trainer": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "micro_batches": 2},
    "generation": {"max_new_tokens": 12},
    "benchmarks": {"hard": {"source": "tiny-math:aime24", "k": 2, "weight": 0.5, "limit": 3},
                   "easy": {"source": "tiny-math:math500", "metric": "greedy", "weight": 0.5, "limit": 3}},
})


def evaluate(source: str, name: str = "hostile", **kw):
    return run_evaluation(AlgorithmSpec(name, source, f"{name}.py"), TRL, 0, threads=1, timeout_s=300, **kw)


@pytest.fixture(scope="module")
def grpo_trl(jail):
    res = run_evaluation(AlgorithmSpec("grpo"), TRL, 0, threads=1, timeout_s=300)
    assert not isinstance(res, EvalFailure), res
    assert res.info["hook_calls"] > 0  # the untampered run went through its hook process too
    return res


# score tampering (the trainer, TRL, transformers and the scorer patched at import and at call time),
# writes to the host and to poise itself, every kind of socket, and processes that would outlive the run:
# each in its own try, so one that is refused cannot shield the next
TAMPER = """
import sys
import poise.backends.trl.scoring as scoring
import poise.backends.trl.trainer as trainer
import poise.evaluation.metrics as metrics
scoring.score = lambda *a, **k: {"overall": 100.0, "tiers": {}}
trainer.PoiseGRPOTrainer.compute_loss = lambda *a, **k: None
metrics.overall = lambda *a, **k: 100.0
for name in [n for n in sys.modules if n.split(".")[0] in ("trl", "transformers", "poise")]:
    mod = sys.modules[name]
    for attr in ("score", "evaluate_policy", "train", "compute_loss", "_compute_loss"):
        try:
            setattr(mod, attr, lambda *a, **k: 100.0)
        except BaseException:
            pass
"""


def every_attack(tmp_path, listeners) -> str:
    net = f"""
        import socket
        for t in (lambda: socket.create_connection(("127.0.0.1", {listeners.tcp_port}), timeout=1),
                  lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {listeners.udp_port})),
                  lambda: socket.socket(socket.AF_UNIX).connect({listeners.unix_path!r}),
                  lambda: socket.socket(socket.AF_UNIX).connect({listeners.abstract_name!r})):
            try:
                t()
            except BaseException:
                pass
        for t in (lambda: os.fork() == 0 and os.execve("/bin/sleep", ["/bin/sleep", "300"], {{"M": "{MARKER}"}}),
                  lambda: __import__("subprocess").Popen(["/bin/sleep", "300"], env={{"M": "{MARKER}"}},
                                                         start_new_session=True),
                  lambda: os.posix_spawn("/bin/sleep", ["/bin/sleep", "300"], {{"M": "{MARKER}"}})):
            try:
                t()
            except BaseException:
                pass
    """
    block = lambda code: ["try:", *("    " + ln for ln in textwrap.dedent(code).strip().splitlines()),
                          "except BaseException:", "    pass"]
    body = "\n".join(block(TAMPER) + block(writes(tmp_path)) + block(net))
    tamper = "\n".join(block(TAMPER))  # at import time, where a failed import must not end the load
    return attack(body, imports="import os\nimport time\n" + tamper)


def test_every_attack_at_once_leaves_trl_scoring_grpo_to_the_bit(tmp_path, grpo_trl):
    (tmp_path / "keep.txt").write_text("keep me")
    before, pkg = files_under(tmp_path), package_digest()
    listeners = Listeners(tmp_path)
    try:
        res = evaluate(every_attack(tmp_path, listeners))
        time.sleep(0.3)
        got = list(listeners.got)
    finally:
        listeners.close()
    assert not isinstance(res, EvalFailure), res
    assert res.info["hook_calls"] >= grpo_trl.info["hook_calls"]  # the attacks ran, on every call
    assert res.metrics == grpo_trl.metrics and curves(res) == curves(grpo_trl)
    assert res.metrics["overall"] < 100
    assert got == [] and files_under(tmp_path) == before and package_digest() == pkg
    assert not os.path.exists(os.path.expanduser("~/poise-pwned.txt"))
    assert processes_with(MARKER) == []


def test_answers_forged_for_the_trusted_side_are_only_the_candidates_own_outputs():
    # the candidate owns its process and can answer anything: what comes back is checked and used as its
    # advantages, never as a score: here, forged "perfect" answers train TRL's model on zeros
    res = evaluate(attack(FORGED_ZEROS))
    assert not isinstance(res, EvalFailure), res
    assert all(r["adv_abs_mean"] == 0 for r in res.trajectory) and res.info["hook_calls"] > 0
    assert res.metrics["overall"] != 100.0 and "verdict" not in json.dumps(res.to_dict())


HOOKS = "import torch\n\n{extra}\ndef compute_advantages(batch, cfg):\n    {adv}\n    return batch.rewards\n"


@pytest.mark.parametrize("source, words", [
    (HOOKS.format(extra="", adv="return batch.rewards * float('nan')"), ["compute_advantages returned", "non-finite"]),
    (HOOKS.format(extra="", adv="return torch.zeros(3, 5, 7)"), ["compute_advantages returned shape [3, 5, 7]"]),
    (HOOKS.format(extra="", adv="import os\n    os._exit(7)"), ["compute_advantages ended the hook process"]),
    (HOOKS.format(extra="def shape_rewards(batch, cfg):\n    return batch.rewards[:3]\n", adv="pass"),
     ["shape_rewards returned shape [3]"]),
    (HOOKS.format(extra="def compute_policy_loss(logp, batch, adv, cfg):\n    raise SystemExit(3)\n", adv="pass"),
     ["compute_policy_loss called sys.exit(3)"]),
])
def test_a_broken_contract_stops_the_trl_run_naming_the_hook(source, words):
    res = evaluate(source)
    assert isinstance(res, EvalFailure) and res.kind == "candidate", res
    for w in words:
        assert w in res.message, (w, res.message)


def test_a_hook_that_hangs_is_stopped_at_its_deadline():
    t0 = time.time()
    res = evaluate(HOOKS.format(extra="def shape_rewards(batch, cfg):\n    while True:\n        pass\n", adv="pass"),
                   hook_timeout_s=3)
    assert isinstance(res, EvalFailure) and res.kind == "candidate" and "shape_rewards" in res.message, res
    assert time.time() - t0 < 120
