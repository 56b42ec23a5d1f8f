"""The evaluation worker runs candidates in the sandbox: one cheap check that fails at load time, before
any training (the full worker behaviour is tested in tests/backends)."""

from poise.backends.worker import AlgorithmSpec, EvalFailure, run_evaluation

PROBE = '''import os
key = os.environ.get("POISE_TEST_API_KEY", "<no key>")
try:
    open({target!r}, "w").write("pwned")
    wrote = "wrote it"
except PermissionError as e:
    wrote = str(e)
raise RuntimeError(f"key={{key}} | write={{wrote}} | cache={{os.environ.get('POISE_CACHE')}}")
def compute_advantages(batch, cfg):
    return batch.rewards
'''


def test_an_evaluated_candidate_sees_no_keys_and_cannot_write_outside(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("POISE_TEST_API_KEY", "sk-do-not-leak")
    target = tmp_path / "pwned.txt"
    res = run_evaluation(AlgorithmSpec("probe", PROBE.format(target=str(target)), "/x/probe.py"), "smoke", 0,
                         timeout_s=60)
    assert isinstance(res, EvalFailure) and res.kind == "load", res
    assert "key=<no key>" in res.message
    assert "write=blocked by the poise sandbox" in res.message and not target.exists()
    assert f"cache={cache_dir}" in res.message  # the SFT cache still reaches the child
