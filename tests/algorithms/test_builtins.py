"""Properties every built-in must have, checked on many synthetic probe batches."""

import ast
import dataclasses
import itertools

import pytest
import torch

from poise.algorithms import BUILTINS, builtin_source, describe_builtins, load_algorithm
from poise.algorithms.base import RolloutBatch
from poise.algorithms.probe import make_probe_batch

from .helpers import assert_ranked_below, per_response, run

# (group size, shuffled rows): contiguous and verl-style interleaved groups, small and large G;
# each test runs on several seeds of each.
PROBES = [dict(group_size=g, shuffle=sh) for g, sh in itertools.product((2, 4, 8, 16), (False, True))]
SEEDS = range(4)


def PROBE_ID(p):
    return f"G{p['group_size']}-{'shuf' if p['shuffle'] else 'contig'}"


def tensor_fields(batch: RolloutBatch):
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor)}


@pytest.mark.parametrize("name", BUILTINS)
def test_loads_with_summary_and_valid_config(name):
    alg = load_algorithm(name)
    assert alg.name == name and alg.origin == f"builtin:{name}"
    assert alg.summary and len(alg.summary) < 110, "the first docstring line is a one-line summary"
    assert dict(describe_builtins())[name] == alg.summary
    alg.config.validate()


@pytest.mark.parametrize("name", BUILTINS)
def test_imports_only_torch_math_and_base(name):
    # Candidates imitate the built-ins, and the sandbox only offers these modules.
    tree = ast.parse(builtin_source(name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name in ("torch", "math") for a in node.names), ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module in ("poise.algorithms.base", "torch", "math"), node.module


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("probe", PROBES, ids=PROBE_ID)
@pytest.mark.parametrize("seed", SEEDS)
def test_shape_finite_masked_pure_deterministic(algos, name, probe, seed):
    alg = algos[name]
    batch = make_probe_batch(seed=seed, **probe)
    before = {k: v.clone() for k, v in tensor_fields(batch).items()}
    adv = run(alg, batch)
    assert adv.shape == batch.mask.shape
    assert torch.isfinite(adv).all()
    assert (adv[batch.mask == 0] == 0).all(), "advantages must be zero on padding"
    for k, v in tensor_fields(batch).items():
        assert torch.equal(v, before[k]), f"{name} modified batch.{k} in place"
    assert torch.equal(run(alg, batch), adv), "not deterministic"


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("probe", PROBES, ids=PROBE_ID)
def test_correct_beats_wrong_in_every_mixed_group(algos, name, probe):
    for seed in range(8):
        batch = make_probe_batch(seed=seed, p_valid=0.7 if seed % 2 else 0.9, **probe)
        a = per_response(run(algos[name], batch), batch.mask)
        mixed = assert_ranked_below(a, batch.group_ids, ~batch.correct, batch.correct, f"{name} seed {seed}")
        assert mixed > 0, "the probe batch should contain mixed groups"


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("G", [1, 2, 8, 16])
def test_advantages_stay_on_the_scale_of_the_group(algos, name, G):
    # Binary rewards bound every built-in by about sqrt(G); a blow-up means a division by eps somewhere.
    for seed in range(3):
        batch = make_probe_batch(seed=seed, group_size=G, shuffle=True)
        assert run(algos[name], batch).abs().max() <= 2 * G ** 0.5 + 2


@pytest.mark.parametrize("name", BUILTINS)
def test_policy_loss_finite_and_gradient_only_on_response_tokens(algos, name):
    alg = algos[name]
    batch = make_probe_batch(seed=3)
    adv = run(alg, batch)
    logp = (batch.old_logp + 0.05 * torch.randn(batch.old_logp.shape, generator=torch.Generator().manual_seed(0))
            ).requires_grad_(True)
    loss, metrics = alg.compute_policy_loss(logp, batch, adv, alg.config)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert isinstance(metrics, dict)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert (logp.grad[batch.mask == 0] == 0).all()
    assert logp.grad.abs().sum() > 0


@pytest.mark.parametrize("name", BUILTINS)
def test_advantage_is_constant_over_each_response(algos, name):
    # All seven built-ins are outcome-level: one number per response, broadcast over its tokens.
    batch = make_probe_batch(seed=5)
    adv = run(algos[name], batch)
    per = per_response(adv, batch.mask)
    assert torch.allclose(adv, per[:, None] * batch.mask)
