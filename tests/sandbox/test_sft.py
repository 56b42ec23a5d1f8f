import dataclasses

import pytest
import torch

from poise.sandbox import sft as sft_mod
from poise.sandbox.model import ModelConfig
from poise.sandbox.sft import SFTConfig, load_or_train_sft, sft_key

TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=160)
QUICK = SFTConfig(steps=30, batch_size=16, restart_steps=0)


def test_warm_start_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("POISE_CACHE", str(tmp_path))
    losses = []
    cfg = dataclasses.replace(QUICK, steps=60)
    load_or_train_sft(TINY, cfg, progress=lambda i, n, loss: losses.append(loss))
    assert len(losses) == cfg.steps
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5  # ~2.9 -> ~2.5 nats per token


def test_the_restart_cycle_continues_the_first_cycle(tmp_path, monkeypatch):
    """The warm restart runs after the first cycle (progress counts both) and changes the policy; the first
    cycle is the same with or without it, so the shipped asset's first half is the no-restart policy."""
    monkeypatch.setenv("POISE_CACHE", str(tmp_path))
    steps = []
    cfg = dataclasses.replace(QUICK, restart_steps=10, restart_lr=1e-3)
    seen = []
    real = sft_mod._sft_cycle
    monkeypatch.setattr(sft_mod, "_sft_cycle", lambda model, *a, **k: (
        real(model, *a, **k), seen.append({n: t.clone() for n, t in model.state_dict().items()}))[0])
    with_restart = load_or_train_sft(TINY, cfg, progress=lambda i, n, loss: steps.append((i, n)))
    assert steps == [(i, 40) for i in range(1, 41)] and len(seen) == 2
    without = load_or_train_sft(TINY, QUICK)
    assert all(torch.equal(seen[0][k], v) for k, v in without.state_dict().items())  # same first cycle
    assert not all(torch.equal(x, y) for x, y in zip(with_restart.state_dict().values(), without.state_dict().values()))
    assert sft_key(TINY, cfg) != sft_key(TINY, QUICK)


def test_second_call_loads_the_cache_instead_of_training(tmp_path, monkeypatch):
    monkeypatch.setenv("POISE_CACHE", str(tmp_path))
    a = load_or_train_sft(TINY, QUICK)
    monkeypatch.setattr(sft_mod, "train_sft", lambda *a, **k: pytest.fail("retrained despite the cache"))
    b = load_or_train_sft(TINY, QUICK)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_corrupt_cache_file_is_retrained_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("POISE_CACHE", str(tmp_path))
    a = load_or_train_sft(TINY, QUICK)
    (path,) = (tmp_path / "sft").glob("*.pt")
    path.write_bytes(b"not a checkpoint")
    logs = []
    b = load_or_train_sft(TINY, QUICK, log=logs.append)
    assert any("does not match its SHA-256" in m and "retraining" in m for m in logs)
    # training is deterministic, so the retrained policy is the same one
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_tampered_warm_start_is_never_trained_from(tmp_path, monkeypatch):
    # a well-formed checkpoint with other weights (a poisoned cache) fails the digest check and is retrained
    monkeypatch.setenv("POISE_CACHE", str(tmp_path))
    a = load_or_train_sft(TINY, QUICK)
    (path,) = (tmp_path / "sft").glob("*.pt")
    state = {k: v * 0 for k, v in a.state_dict().items()}
    torch.save(state, path)
    logs = []
    b = load_or_train_sft(TINY, QUICK, log=logs.append)
    assert any("changed since poise wrote it" in m for m in logs)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # and the retrained file passes its check again
    monkeypatch.setattr(sft_mod, "train_sft", lambda *a, **k: pytest.fail("retrained a file that matches"))
    load_or_train_sft(TINY, QUICK)


def test_the_shipped_warm_start_is_checked_against_the_manifest(tmp_path, monkeypatch):
    from poise.evaluation.fidelity import get_fidelity
    fid = get_fidelity("standard")
    key = sft_key(fid.model, fid.sft)
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / f"sft-{key}.pt").write_bytes((sft_mod.ASSETS / f"sft-{key}.pt").read_bytes() + b"x")
    (assets / "SHA256SUMS").write_text((sft_mod.ASSETS / "SHA256SUMS").read_text())
    monkeypatch.setattr(sft_mod, "ASSETS", assets)
    monkeypatch.setenv("POISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sft_mod, "train_sft", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("retrain")))
    logs = []
    with pytest.raises(RuntimeError, match="retrain"):
        load_or_train_sft(fid.model, fid.sft, log=logs.append)
    assert any("does not match its SHA-256" in m for m in logs)


def test_the_cache_key_covers_everything_that_shapes_the_policy():
    base = sft_key(TINY, QUICK)
    assert sft_key(TINY, QUICK) == base
    assert sft_key(dataclasses.replace(TINY, n_embd=64), QUICK) != base
    assert sft_key(TINY, dataclasses.replace(QUICK, slip=0.3)) != base
    assert sft_key(TINY, dataclasses.replace(QUICK, no_answer=0.0)) != base


def test_the_shipped_standard_warm_start_matches_the_standard_configuration(tmp_path, monkeypatch):
    # a first `poise train` must not spend minutes on SFT: the package ships the standard warm start,
    # found by the same key, so any change to the configuration (or the task) retrains instead
    from poise.evaluation.fidelity import get_fidelity
    monkeypatch.setenv("POISE_CACHE", str(tmp_path))
    monkeypatch.setattr(sft_mod, "train_sft", lambda *a, **k: pytest.fail("the shipped warm start was not used"))
    fid = get_fidelity("standard")
    model = load_or_train_sft(fid.model, fid.sft)
    assert model.num_params() > 500_000
