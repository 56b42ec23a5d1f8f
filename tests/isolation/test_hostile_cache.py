"""Class: poisoning the warm start every later candidate starts from. While it is missing, the worker
(trusted) trains and writes it; the candidate's hook process never sees the cache folder."""

import hashlib

import pytest

from poise.backends.worker import AlgorithmSpec, run_evaluation
from tests.isolation.hostile import attack, files_under

pytestmark = pytest.mark.usefixtures("jail")


def test_a_candidate_cannot_write_or_read_the_cache_while_the_warm_start_is_trained(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POISE_CACHE", str(cache))
    src = attack(f"""
        import torch
        os.makedirs({str(cache / "sft")!r}, exist_ok=True)
        for name in os.listdir({str(cache / "sft")!r}):
            torch.save({{}}, {str(cache / "sft")!r} + "/" + name)
        open({str(cache / "sft" / "poison.pt")!r}, "wb").write(b"poison")
    """)
    res = run_evaluation(AlgorithmSpec("poisoner", src, "poisoner.py"), "smoke", 0, threads=1, timeout_s=300)
    assert not hasattr(res, "kind"), res
    files = files_under(cache)
    assert not any("poison" in name for name in files)
    pts = [n for n in files if n.endswith(".pt")]
    assert len(pts) == 1, files  # the warm start the worker trained, and nothing else
    assert hashlib.sha256(files[pts[0]]).hexdigest() == files[pts[0] + ".sha256"].decode().strip()
    # a later, honest evaluation starts from that file and gets the same numbers as a fresh cache would
    again = run_evaluation(AlgorithmSpec("grpo"), "smoke", 0, threads=1)
    monkeypatch.setenv("POISE_CACHE", str(tmp_path / "fresh"))
    fresh = run_evaluation(AlgorithmSpec("grpo"), "smoke", 0, threads=1)
    assert again.metrics == fresh.metrics
