import torch

from poise.sandbox.model import ModelConfig, TinyGPT, generate, pad_prompts, response_logprobs
from poise.sandbox.task import BOS, EOS, PAD, encode


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyGPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()


def _prompts():
    return pad_prompts([[BOS, *encode("3+4=")], [BOS, *encode("12+7-9+3=")], [BOS, *encode("5-2+8+1+1=")]])


def test_kv_cached_sampling_log_probs_match_a_full_forward_pass():
    # old_logp comes from the sampler; the first PPO update must see ratio 1, so the two must agree
    m = _model()
    P = _prompts()
    s = generate(m, P, 20, stream=0)
    with torch.no_grad():
        lp, ent = response_logprobs(m, P, s.tokens, s.mask, with_entropy=True)
    assert torch.allclose(lp, s.logp, atol=1e-4)
    assert torch.allclose(ent, s.entropy, atol=1e-4)


def test_left_padding_does_not_change_a_rows_output():
    m = _model(1)
    alone = pad_prompts([[BOS, *encode("3+4=")]])
    batch = _prompts()
    a = generate(m, alone, 15, greedy=True)
    b = generate(m, batch, 15, greedy=True)
    n = int(a.lengths[0])
    assert torch.equal(a.tokens[0, :n], b.tokens[0, :n])


def test_sampling_is_reproducible_with_the_same_stream():
    m = _model(2)
    P = _prompts().repeat(4, 1)
    a = generate(m, P, 20, stream=7)
    b = generate(m, P, 20, stream=7)
    c = generate(m, P, 20, stream=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp)
    assert not torch.equal(a.tokens, c.tokens)


def test_tokens_after_the_end_token_are_padding_and_lengths_include_it():
    m = _model(3)  # random weights: the end token (1 in 18) ends some rows early and not others
    s = generate(m, _prompts().repeat(8, 1), 10, stream=0)
    for r in range(s.tokens.shape[0]):
        L = int(s.lengths[r])
        assert (s.mask[r, :L] == 1).all() and (s.mask[r, L:] == 0).all()
        if s.finished[r]:
            assert int(s.tokens[r, L - 1]) == EOS
        assert (s.tokens[r, L:] == PAD).all()
        assert (s.logp[r, L:] == 0).all()
    assert s.finished.any() and not s.finished.all()
    assert (s.logp <= 0).all() and (s.entropy >= 0).all()


def test_budget_beyond_block_size_is_a_clear_error():
    m = _model()
    try:
        generate(m, _prompts(), 200)
    except ValueError as e:
        assert "block_size" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_dropping_finished_rows_mid_decode_does_not_change_any_row(smoke_policy):
    # rows finish at different times, so the batch is compacted several times; each row must still
    # decode exactly as it does alone (the SFT policy ends its answers, a random one would not)
    m = smoke_policy
    prompts = [[BOS, *encode(p)] for p in ["3+4=", "12+7-9+3=", "5-2+8+1+1=", "9=", "1+1+1+1+1+1+1=", "45-5="]] * 3
    batch = generate(m, pad_prompts(prompts), 40, greedy=True)
    assert len(set(batch.lengths.tolist())) > 2
    for i, p in enumerate(prompts):
        alone = generate(m, pad_prompts([p]), 40, greedy=True)
        n = int(alone.lengths[0])
        assert int(batch.lengths[i]) == n
        assert torch.equal(batch.tokens[i, :n], alone.tokens[0, :n])
