"""Synthetic rollout batches for testing algorithms without a model: ``make_probe_batch``, ``batch_from``.

A probe batch has the shapes and invariants of a real sandbox step, so property tests (here, and the
verifier's tests of candidate code) can run an algorithm in milliseconds:

- N = num_prompts * group_size responses, groups contiguous (rows g*G .. g*G+G-1), unless ``shuffle``;
- ``correct`` implies ``valid``; ``truncated`` implies not ``valid`` and length == max_len;
- responses that ended on their own have lengths in [min_len, max_len - 1], so length == max_len
  marks truncation exactly;
- rewards = correct.float(), the sandbox's binary reward;
- mask[i, t] = 1 for t < lengths[i]; T = the longest response (right padding, as the trainer has);
- old_logp <= 0, ref_logp within a few hundredths of old_logp and <= 0, entropy >= 0; all three are 0
  outside the mask.

By default (``p_correct=None``) the groups cycle through four kinds, so a batch of four or more
prompts holds every case an advantage function must handle:

    prompt % 4 == 0   all-fail    no response correct; validity drawn with p_valid
    prompt % 4 == 1   mixed       pass rate drawn in [0.2, 0.8], at least one valid-correct and one
                                  valid-wrong response (rows 0 and 1 of the group are forced)
    prompt % 4 == 2   all-pass    every response valid and correct
    prompt % 4 == 3   mixed       as above

A float ``p_correct`` (or a sequence of one float per prompt) instead draws every response
independently: valid with probability p_valid, then correct with probability p_correct given valid,
with nothing forced. Invalid responses are truncated with probability ``p_truncated``.

Everything is drawn from one ``torch.Generator`` seeded with ``seed``, so a (seed, arguments) pair
always gives the same batch. ``batch_from`` builds a batch from explicit per-response values instead,
for hand-computed cases.
"""

from __future__ import annotations

from typing import Sequence

import torch

from poise.algorithms.base import RolloutBatch

KINDS = ("all-fail", "mixed", "all-pass", "mixed")


def make_probe_batch(num_prompts: int = 8, group_size: int = 8, max_len: int = 24, seed: int = 0,
                     p_correct: float | Sequence[float] | None = None, p_valid: float = 0.8,
                     p_truncated: float = 0.5, min_len: int = 2, shuffle: bool = False) -> RolloutBatch:
    """A deterministic synthetic RolloutBatch; see the module docstring for what it guarantees.

    ``shuffle=True`` permutes the rows, so groups are no longer contiguous (verl's uid-keyed layout);
    code that reshapes to [P, G] instead of using ``group_ids`` gives wrong answers on such a batch.
    """
    if num_prompts < 1 or group_size < 1:
        raise ValueError("num_prompts and group_size must be >= 1")
    if not 1 <= min_len <= max_len - 1:
        raise ValueError(f"need 1 <= min_len <= max_len - 1 (got min_len={min_len}, max_len={max_len})")
    gen = torch.Generator().manual_seed(seed)
    P, G = num_prompts, group_size
    N = P * G

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    valid = rand(N) < p_valid
    if p_correct is None:
        kind = [KINDS[g % len(KINDS)] for g in range(P)]
        rate = torch.tensor([0.2 + 0.6 * float(rand(())) for _ in range(P)])
    else:
        kind = ["drawn"] * P
        rate = torch.tensor([float(p_correct)] * P if isinstance(p_correct, (int, float)) else list(p_correct),
                            dtype=torch.float32)
        if rate.shape != (P,):
            raise ValueError(f"p_correct needs one value per prompt ({P}), got {rate.numel()}")
    correct = valid & (rand(N) < rate.repeat_interleave(G))
    for g, k in enumerate(kind):
        rows = slice(g * G, (g + 1) * G)
        if k == "all-fail":
            correct[rows] = False
        elif k == "all-pass":
            valid[rows], correct[rows] = True, True
        elif k == "mixed" and G >= 2:
            valid[g * G], correct[g * G] = True, True
            valid[g * G + 1], correct[g * G + 1] = True, False
    truncated = ~valid & (rand(N) < p_truncated)

    ended = torch.randint(min_len, max_len, (N,), generator=gen)
    lengths = torch.where(truncated, torch.full_like(ended, max_len), ended)
    batch = _assemble(correct.float(), correct, valid, lengths, truncated, torch.arange(P).repeat_interleave(G),
                      G, max_len, gen)
    if shuffle:
        batch = batch.select(torch.randperm(N, generator=gen))
    return batch


def batch_from(rewards, group_ids=None, *, correct=None, valid=None, lengths=None, truncated=None,
               max_len: int = 16, seed: int = 0) -> RolloutBatch:
    """A RolloutBatch with the given per-response values, for hand-computed cases.

    Defaults: one group holding every response; ``correct`` = rewards > 0.5; ``truncated`` = length
    == max_len; ``valid`` = correct, or not truncated; lengths drawn in [1, max_len - 1]. The
    log-probs and entropies are drawn as in ``make_probe_batch``. ``group_size`` is the largest group.
    Nothing is checked: a test may build an inconsistent batch on purpose.
    """
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    N = rewards.numel()
    group_ids = torch.zeros(N, dtype=torch.long) if group_ids is None else torch.as_tensor(group_ids).long()
    correct = rewards > 0.5 if correct is None else torch.as_tensor(correct).bool()
    if lengths is None:
        lengths = torch.randint(1, max_len, (N,), generator=gen) if max_len > 1 else torch.ones(N, dtype=torch.long)
    lengths = torch.as_tensor(lengths).long()
    truncated = lengths >= max_len if truncated is None else torch.as_tensor(truncated).bool()
    valid = correct | ~truncated if valid is None else torch.as_tensor(valid).bool()
    group_size = int(torch.bincount(group_ids).max()) if N else 0
    return _assemble(rewards, correct, valid, lengths, truncated, group_ids, group_size, max_len, gen)


def _assemble(rewards, correct, valid, lengths, truncated, group_ids, group_size, max_len, gen) -> RolloutBatch:
    N = rewards.numel()
    T = int(lengths.max()) if N else 0
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    old_logp = torch.log(0.05 + 0.95 * torch.rand(N, T, generator=gen)) * mask
    ref_logp = (old_logp + 0.03 * torch.randn(N, T, generator=gen)).clamp_max(0.0) * mask
    entropy = 3.0 * torch.rand(N, T, generator=gen) * mask
    return RolloutBatch(rewards=rewards, correct=correct, valid=valid, lengths=lengths, mask=mask,
                        group_ids=group_ids, old_logp=old_logp, ref_logp=ref_logp, entropy=entropy,
                        truncated=truncated, group_size=group_size, max_len=max_len)
