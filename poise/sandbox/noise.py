"""Common random numbers for sampling: noise indexed by what it is for, never by the order of draws.

Every sampled token is ``argmax(logits / temperature + Gumbel)`` (the Gumbel-max trick, an exact draw from
the softmax), where the Gumbel variable of token ``v`` at position ``t`` of row ``r`` of stream ``s`` is a
hash of ``(s, r, t, v)``. So:

- two policies that put nearly the same probabilities on a token draw the same token (the Gumbel-max
  coupling), and a row that diverges leaves every other row's draws where they were;
- the noise of an evaluation at seed ``s`` depends on ``s`` alone, whatever the policy, the batch size or
  the rows still alive: every arm scored at seed ``s`` is scored with the same noise, and different seeds
  draw different noise;
- the numbers are integers until the last step, so the noise itself is the same on every processor and
  thread count; only a near-tie between two logits can turn on rounding.

The hash is Chris Wellons' ``lowbias32`` integer mixer, chained over the key's parts, in int64 tensor
arithmetic (wrap-around keeps the low 32 bits exact).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """lowbias32 on int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def stream_id(*parts: object) -> int:
    """A 32-bit stream key from readable parts, e.g. ``stream_id("eval", seed, "aime24")``."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def gumbel(stream: int, rows: Tensor, position: int, vocab: int) -> Tensor:
    """Gumbel(0, 1) noise [len(rows), vocab] (float32) for ``position`` of the given original ``rows``."""
    dev = rows.device
    key = _mix(torch.full_like(rows, stream & _M32, dtype=torch.int64) ^ (rows.long() & _M32))
    key = _mix(key ^ (position & _M32))
    tok = torch.arange(vocab, dtype=torch.int64, device=dev)
    h = _mix(_mix(key[:, None] ^ tok[None, :]) + 0x9E3779B9 & _M32)
    u = (h.double() + 0.5) / 2.0 ** 32  # in (0, 1), never 0 or 1
    return (-torch.log(-torch.log(u))).float()


def draw(logits: Tensor, temperature: float, stream: int, rows: Tensor, position: int) -> Tensor:
    """Sampled token ids [B]: a draw from softmax(logits / temperature), with this row's and position's noise."""
    return (logits / temperature + gumbel(stream, rows, position, logits.shape[-1]).to(logits.device)).argmax(-1)
