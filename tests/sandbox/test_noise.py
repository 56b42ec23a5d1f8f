import copy

import torch

from poise.sandbox import noise
from poise.sandbox.model import ModelConfig, TinyGPT, generate, pad_prompts
from poise.sandbox.task import BOS, PAD, encode


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyGPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()


def _prompts(n):
    texts = ["3+4=", "12+7-9+3=", "5-2+8+1+1=", "9-8+7="]
    return pad_prompts([[BOS, *encode(texts[i % len(texts)])] for i in range(n)])


def test_draws_follow_the_softmax():
    # a chi-square-sized check: 200k draws from a fixed distribution at temperature 1 and 2
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5])
    n = 200_000
    for temp in (1.0, 2.0):
        tok = noise.draw(logits.repeat(n, 1), temp, noise.stream_id("test", temp), torch.arange(n), 5)
        freq = torch.bincount(tok, minlength=5).double() / n
        p = torch.softmax(logits.double() / temp, 0)
        assert (freq - p).abs().max() < 4 * (p * (1 - p) / n).sqrt().max()


def test_noise_is_indexed_by_stream_row_and_position_not_by_draw_order():
    rows = torch.arange(50)
    a = noise.gumbel(11, rows, 3, 18)
    assert torch.equal(a[[7, 30]], noise.gumbel(11, torch.tensor([7, 30]), 3, 18))  # a subset of rows: same values
    assert torch.equal(a.flip(0), noise.gumbel(11, rows.flip(0), 3, 18))
    for other in (noise.gumbel(12, rows, 3, 18), noise.gumbel(11, rows, 4, 18), noise.gumbel(11, rows + 50, 3, 18)):
        assert not torch.isclose(a, other).any(dim=1).all()  # another stream, position or row: other noise
    assert noise.stream_id("eval", 0, "aime24") != noise.stream_id("eval", 1, "aime24")


def test_a_row_draws_the_same_tokens_whatever_else_is_in_the_batch():
    # the old sampler drew in the order of the rows still alive: one row that ended earlier shifted every
    # later draw of every other row. Now row r's tokens depend on the stream, its own index and its policy only.
    m = _model(4)
    P = _prompts(12)
    full = generate(m, P, 24, stream=5)
    part = generate(m, P[6:], 24, stream=5, row_offset=6)
    n = part.tokens.shape[1]
    assert torch.equal(full.tokens[6:, :n], part.tokens) and (full.tokens[6:, n:] == PAD).all()
    assert torch.equal(full.lengths[6:], part.lengths)


def test_two_nearly_equal_policies_draw_nearly_the_same_samples():
    # common random numbers: a tiny change to the weights changes few sampled tokens, on the same stream
    m = _model(5)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    P = _prompts(64)
    a, b = generate(m, P, 30, stream=9), generate(m2, P, 30, stream=9)
    same_rows = (a.tokens == b.tokens).all(1).float().mean()
    assert same_rows > 0.9
    other = generate(m, P, 30, stream=10)  # another stream: another sample
    assert (a.tokens == other.tokens).all(1).float().mean() < 0.5
