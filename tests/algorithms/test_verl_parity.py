"""GRPO, Dr. GRPO and RLOO against verl's advantage estimators (verl 0.9.1, core_algos.py).

Two references:
- the real verl, when it is importable. It is not a dependency of poise; to run these tests install
  it without its heavy dependency tree (about 10 s, CPU only):
      pip install --no-deps verl==0.9.1 ray msgpack protobuf requests urllib3 certifi charset-normalizer \
          jsonschema jsonschema-specifications referencing rpds-py attrs tensordict pyvers cloudpickle \
          omegaconf codetiming orjson
- an independent transcription of verl's loop semantics, below, which always runs.
"""

from collections import defaultdict

import numpy as np
import pytest
import torch

from poise.algorithms.probe import batch_from

from .helpers import run


# ---- Transcription of verl's semantics (NOT verl itself; written from verl 0.9.1's source) ----------------

def transcribed_verl_grpo(token_level_rewards, response_mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True):
    """verl's compute_grpo_outcome_advantage: scores grouped by uid in a defaultdict; singletons get
    mean 0 and std 1; otherwise torch.mean and torch.std (unbiased); (s - mean) / (std + eps); times the mask."""
    scores = token_level_rewards.sum(dim=-1)
    id2score, id2mean, id2std = defaultdict(list), {}, {}
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    for idx, group in id2score.items():
        if len(group) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            id2mean[idx], id2std[idx] = torch.mean(torch.stack(group)), torch.std(torch.stack(group))
    out = scores.clone()
    for i in range(scores.shape[0]):
        if norm_adv_by_std_in_grpo:
            out[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
        else:
            out[i] = scores[i] - id2mean[index[i]]
    return out.unsqueeze(-1) * response_mask


def transcribed_verl_rloo_vectorized(token_level_rewards, response_mask, index):
    """verl's compute_rloo_vectorized_outcome_advantage: (c*s - group sum)/(c - 1), zero for singletons."""
    scores = token_level_rewards.sum(dim=-1)
    out = torch.zeros_like(scores)
    for i in range(scores.shape[0]):
        others = [scores[j] for j in range(scores.shape[0]) if index[j] == index[i] and j != i]
        if others:
            out[i] = scores[i] - torch.stack(others).mean()
    return out.unsqueeze(-1) * response_mask


# ---- Random inputs: non-contiguous, sparse group ids and singleton groups --------------------------------

def random_case(seed, binary):
    g = torch.Generator().manual_seed(seed)
    sizes = [1, 1, 2, 3, 5, 8, 8][: 3 + seed % 5]  # always includes singletons
    labels = (torch.randperm(50, generator=g)[: len(sizes)] * 3).tolist()  # sparse, unordered
    gid = torch.tensor([lab for lab, n in zip(labels, sizes) for _ in range(n)])
    gid = gid[torch.randperm(len(gid), generator=g)]  # interleave the groups
    n = len(gid)
    rewards = (torch.rand(n, generator=g) < 0.5).float() if binary else torch.randn(n, generator=g)
    batch = batch_from(rewards, gid, seed=seed, max_len=12)
    tlr = torch.zeros_like(batch.mask)
    tlr[torch.arange(n), batch.lengths - 1] = rewards  # verl puts the score on the last response token
    index = np.array([f"uid-{int(x)}" for x in gid], dtype=object)
    return batch, tlr, index


CASES = [(seed, binary) for seed in range(10) for binary in (True, False)]


@pytest.mark.parametrize("seed,binary", CASES)
def test_grpo_matches_transcribed_verl(algos, seed, binary):
    batch, tlr, index = random_case(seed, binary)
    ref = transcribed_verl_grpo(tlr, batch.mask, index)
    torch.testing.assert_close(run(algos["grpo"], batch), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,binary", CASES)
def test_dr_grpo_matches_transcribed_verl_without_std(algos, seed, binary):
    batch, tlr, index = random_case(seed, binary)
    ref = transcribed_verl_grpo(tlr, batch.mask, index, norm_adv_by_std_in_grpo=False)
    torch.testing.assert_close(run(algos["dr_grpo"], batch), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,binary", CASES)
def test_rloo_matches_transcribed_verl_rloo_vectorized(algos, seed, binary):
    batch, tlr, index = random_case(seed, binary)
    ref = transcribed_verl_rloo_vectorized(tlr, batch.mask, index)
    torch.testing.assert_close(run(algos["rloo"], batch), ref, rtol=1e-5, atol=1e-5)


def test_transcription_on_a_hand_case():
    # Guards the reference itself: G=4, one success -> mean .25, unbiased std .5.
    r = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    out = transcribed_verl_grpo(r, torch.ones(4, 1), np.array(["a"] * 4))
    torch.testing.assert_close(out[:, 0], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6))


# ---- The real verl ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def verl_algos():
    return pytest.importorskip("verl.trainer.ppo.core_algos")


@pytest.mark.parametrize("seed,binary", CASES)
def test_grpo_matches_real_verl(algos, verl_algos, seed, binary):
    batch, tlr, index = random_case(seed, binary)
    ref, _ = verl_algos.compute_grpo_outcome_advantage(tlr, batch.mask, index, epsilon=1e-6)
    torch.testing.assert_close(run(algos["grpo"], batch), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,binary", CASES)
def test_dr_grpo_matches_real_verl(algos, verl_algos, seed, binary):
    batch, tlr, index = random_case(seed, binary)
    ref, _ = verl_algos.compute_grpo_outcome_advantage(tlr, batch.mask, index, norm_adv_by_std_in_grpo=False)
    torch.testing.assert_close(run(algos["dr_grpo"], batch), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,binary", CASES)
def test_rloo_matches_real_verl(algos, verl_algos, seed, binary):
    batch, tlr, index = random_case(seed, binary)
    ref, _ = verl_algos.compute_rloo_vectorized_outcome_advantage(tlr, batch.mask, index)
    torch.testing.assert_close(run(algos["rloo"], batch), ref, rtol=1e-5, atol=1e-5)
