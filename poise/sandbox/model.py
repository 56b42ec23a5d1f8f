"""A tiny decoder-only transformer (nanoGPT-style) with KV-cached, batched sampling.

Sequences are laid out as ``[pad.. BOS prompt | response EOS pad..]``: prompts are left-padded so that
every row's response starts at the same column, which lets one preallocated KV cache serve the whole
batch. Positions count real tokens only, so padding never shifts a row's positions.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from poise.sandbox import noise
from poise.sandbox.task import EOS, PAD


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 18
    block_size: int = 128  # longest prompt + response, in tokens
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.fc_out = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor, mask: Tensor, cache: tuple[Tensor, Tensor] | None, start: int) -> Tensor:
        B, L, C = x.shape
        h = self.n_head
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, L, h, C // h).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # write this chunk's keys/values, attend over everything so far
            kc, vc = cache
            kc[:, :, start:start + L] = k
            vc[:, :, start:start + L] = v
            k, v = kc[:, :, :start + L], vc[:, :, :start + L]
        if L == 1:  # a decode step: plain matmuls beat the CPU's fused kernel by 2x for a single query
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // h))
            y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(B, L, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TinyGPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2
        self.apply(self._init)
        for b in self.blocks:  # GPT-2's scaled init of residual projections
            assert isinstance(b, Block)  # self.blocks holds only Blocks
            for p in (b.proj.weight, b.fc_out.weight):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx: Tensor, pos: Tensor, mask: Tensor, caches=None, start: int = 0) -> Tensor:
        x = self.tok(idx) + self.pos(pos)
        for i, b in enumerate(self.blocks):
            x = b(x, mask, None if caches is None else caches[i], start)
        return self.ln_f(x)

    def forward(self, idx: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.hidden(idx, pos, mask))


def positions(valid: Tensor) -> Tensor:
    """Position of each token among its row's real tokens (pads get 0; they are masked anyway)."""
    return (valid.long().cumsum(1) - 1).clamp_min(0)


def attention_mask(valid: Tensor) -> Tensor:
    """Causal mask that also hides pad keys: [B, 1, L, L] bool, True = may attend. Every position may
    attend to itself so that pad rows never get an all-masked (NaN) softmax."""
    L = valid.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
    m = causal[None] & valid[:, None, :]
    return (m | torch.eye(L, dtype=torch.bool, device=valid.device)[None])[:, None]


def autocast(precision: str, device_type: str = "cpu"):
    """bf16 autocast: matrix multiplies run in bfloat16 (fast on GPUs and on CPUs with AMX/AVX512-BF16),
    while softmax, layer norm and the loss stay in float32."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Samples:
    tokens: Tensor  # [B, T] response tokens, PAD after the end token
    logp: Tensor  # [B, T] log-prob of each sampled token (float32)
    entropy: Tensor  # [B, T] entropy of the sampling distribution
    mask: Tensor  # [B, T] float, 1 on response tokens (including the end token)
    lengths: Tensor  # [B]
    finished: Tensor  # [B] bool, emitted the end token within the budget


@torch.no_grad()
def generate(model: TinyGPT, prompts: Tensor, max_new: int, temperature: float = 1.0, greedy: bool = False,
             stream: int = 0, row_offset: int = 0, precision: str = "fp32", ignore_eos: bool = False) -> Samples:
    """Sample ``max_new`` tokens for every left-padded prompt row, with a KV cache, stopping early when
    every row has emitted the end token. Log-probs and entropies are of the temperature-scaled
    distribution that was actually sampled from. ``ignore_eos`` forbids the end token, so every row is
    exactly ``max_new`` long (for throughput benchmarks with a fixed token count).

    The token at position t of row r is drawn with the noise of (``stream``, ``row_offset`` + r, t)
    (`poise.sandbox.noise`): the same stream and rows give the same draws to any policy, so two arms
    sampled on one stream differ only where their probabilities do."""
    model.eval()
    B, Lp = prompts.shape
    cfg = model.cfg
    if Lp + max_new > cfg.block_size:
        raise ValueError(f"prompt ({Lp}) + response budget ({max_new}) exceeds block_size {cfg.block_size}")
    hd = cfg.n_embd // cfg.n_head
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    dev = next(model.parameters()).device
    prompts = prompts.to(dev)
    caches = [(torch.zeros(B, cfg.n_head, Lp + max_new, hd, dtype=dtype, device=dev),
               torch.zeros(B, cfg.n_head, Lp + max_new, hd, dtype=dtype, device=dev)) for _ in range(cfg.n_layer)]
    key_valid = torch.zeros(B, Lp + max_new, dtype=torch.bool, device=dev)
    key_valid[:, :Lp] = prompts != PAD
    pos = positions(key_valid[:, :Lp])
    tokens = torch.full((B, max_new), PAD, dtype=torch.long, device=dev)
    logps = torch.zeros(B, max_new, device=dev)
    ents = torch.zeros(B, max_new, device=dev)
    lengths = torch.zeros(B, dtype=torch.long, device=dev)
    with autocast(precision, dev.type):
        h = model.hidden(prompts, pos, attention_mask(key_valid[:, :Lp]), caches, 0)[:, -1]
    next_pos = pos[:, -1] + 1
    rows = torch.arange(B, device=dev)  # rows still decoding; finished rows are dropped from the batch as they pile up
    live = torch.ones(B, dtype=torch.bool, device=dev)
    T = 0
    for t in range(max_new):
        logits = model.head(h).float()
        if ignore_eos:
            logits[:, EOS] = float("-inf")
        if greedy:
            tok = logits.argmax(-1)
        else:
            logp_all = torch.log_softmax(logits / temperature, -1)
            probs = logp_all.exp()
            tok = noise.draw(logits, temperature, stream, rows + row_offset, t)
            # rows that already ended write here too; the response mask zeroes them on return
            logps[rows, t] = logp_all.gather(1, tok[:, None]).squeeze(1)
            ents[rows, t] = -(probs * logp_all).sum(-1)
        tok = torch.where(live, tok, torch.full_like(tok, PAD))
        tokens[rows, t] = tok
        lengths[rows] += live.long()
        live = live & (tok != EOS)
        T = t + 1
        if not bool(live.any()) or t == max_new - 1:
            break
        if live.sum() * 2 <= live.numel() and live.numel() > 8:  # compact: stop computing finished rows
            keep = live.nonzero().squeeze(1)
            rows, live, tok, next_pos = rows[keep], live[keep], tok[keep], next_pos[keep]
            key_valid = key_valid[keep]
            caches = [(k[keep], v[keep]) for k, v in caches]
        key_valid[:, Lp + t] = live
        with autocast(precision, dev.type):
            mask = key_valid[:, None, None, :Lp + t + 1]
            h = model.hidden(tok[:, None], next_pos[:, None], mask, caches, Lp + t)[:, -1]
        next_pos = next_pos + 1
    finished = tokens[:, :T].eq(EOS).any(1)
    mask = (torch.arange(T, device=dev)[None] < lengths[:, None]).float()
    return Samples(tokens[:, :T], logps[:, :T] * mask, ents[:, :T] * mask, mask, lengths, finished)


def response_logprobs(model: TinyGPT, prompts: Tensor, tokens: Tensor, mask: Tensor, precision: str = "fp32",
                      with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """Log-probs [B, T] of the given response tokens under ``model`` (with gradient), in one forward
    pass over prompt + response. Entropy of each token's distribution on request."""
    B, Lp = prompts.shape
    T = tokens.shape[1]
    dev = tokens.device
    seq = torch.cat([prompts, tokens], 1)
    valid = torch.cat([prompts != PAD, mask.bool()], 1)
    with autocast(precision, dev.type):
        h = model.hidden(seq, positions(valid), attention_mask(valid))
    # hidden state at column j predicts token j+1; the response tokens sit at columns Lp..Lp+T-1
    logits = model.head(h[:, Lp - 1:Lp + T - 1]).float()
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(2, tokens[..., None]).squeeze(2) * mask
    ent = None
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1) * mask
    return logp, ent


def pad_prompts(prompt_ids: list[list[int]]) -> Tensor:
    """Left-pad token lists into a [B, L] tensor."""
    L = max(len(p) for p in prompt_ids)
    out = torch.full((len(prompt_ids), L), PAD, dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        out[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
    return out
