"""Attention for one decode step: torch's fused scaled_dot_product_attention against plain matmuls.

At a decode step each row has one query against the cached keys. On the CPU the fused kernel is tuned
for long queries; for a single one, q @ K^T, a masked softmax and @ V are faster. The sampler uses the
plain form for decode steps (poise/sandbox/model.py, Block.forward) and the fused kernel elsewhere.

    python benchmarks/bench_attention.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def bench(fn, n: int = 50) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=128, help="rows decoded at once (prompts x group size)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, h, d = args.rows, 4, 32
    print("| cached keys | fused SDPA (ms) | plain matmuls (ms) | speed-up | max abs difference |")
    print("|---|---|---|---|---|")
    for L in (40, 70, 100):
        q, k, v = torch.randn(B, h, 1, d), torch.randn(B, h, L, d), torch.randn(B, h, L, d)
        mask = torch.rand(B, 1, 1, L) > 0.1
        mask[..., 0] = True

        def fused():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        def plain():
            att = (q @ k.transpose(-2, -1)) * d ** -0.5
            return att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        a, b = bench(fused), bench(plain)
        print(f"| {L} | {a:.3f} | {b:.3f} | {a / b:.2f}x | {float((fused() - plain()).abs().max()):.1e} |")


if __name__ == "__main__":
    main()
