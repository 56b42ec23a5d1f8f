"""Throughput baseline: Hugging Face TRL's GRPOTrainer on a tiny random char-level model, on CPU.

poise's own trainer is compared against this on the same model size, prompts, group size and
token budget. Needs the optional TRL stack (``pip install "trl==1.16.*"``); everything is built
locally with random weights and the run is fully offline.

One timed "step" is exactly what TRL does per optimizer update with the config below
(steps_per_generation = gradient_accumulation_steps = num_iterations = 1, beta = 0):
one ``model.generate`` call (KV cache on) producing prompts_per_step * group_size completions,
reward scoring, then one forward + backward over those sequences and one AdamW step. TRL does no
extra "old logprobs" forward in this setting, and no reference-model forward since beta = 0.

Run standalone for a smoke check: ``python benchmarks/trl_baseline.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time


def _build_tokenizer(vocab: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    token_to_id = {t: i for i, t in enumerate(specials + [c for c in dict.fromkeys(vocab) if c not in specials])}
    tok = Tokenizer(models.WordLevel(vocab=token_to_id, unk_token="<pad>"))
    # Every character is its own word, so a WordLevel model over a char split is a char-level tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()  # WordLevel would otherwise decode with spaces between characters
    # TRL tokenizes prompts with the default add_special_tokens=True; prepending BOS there mirrors a
    # nanoGPT-style "BOS + prompt" context without touching the completions.
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", padding_side="left"
    )


def _build_model(arch: str, vocab_size: int, n_layer: int, n_head: int, n_embd: int, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if arch == "gpt2":
        # GPT-2 is the nanoGPT layout (learned positions, LayerNorm, GELU 4x MLP); dropout off like nanoGPT's default.
        cfg = GPT2Config(
            vocab_size=vocab_size, n_positions=256, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            n_inner=4 * n_embd, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, **ids,
        )  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=n_embd, intermediate_size=4 * n_embd, num_hidden_layers=n_layer,
            num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=256,
            tie_word_embeddings=True, **ids,
        )  # fmt: skip
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    # generate() reads its defaults from here; keep them aligned with the tokenizer.
    model.generation_config.update(**ids)
    return model


def run_trl_grpo(
    prompts: list[str],
    answers: list[str],
    vocab: list[str],
    *,
    n_layer: int,
    n_head: int,
    n_embd: int,
    group_size: int,
    prompts_per_step: int,
    max_new_tokens: int,
    steps: int,
    lr: float = 1e-4,
    temperature: float = 1.0,
    seed: int = 0,
    threads: int = 2,
    warmup_steps: int = 1,
    arch: str = "gpt2",
    ignore_eos: bool = False,
) -> dict:
    """Train `warmup_steps + steps` GRPO steps with TRL and time the last `steps`.

    ``arch`` picks "gpt2" (nanoGPT-like, default) or "llama". ``ignore_eos=True`` forbids EOS so
    every completion is exactly ``max_new_tokens`` long (a fixed token budget for both sides).
    """
    if len(prompts) != len(answers) or len(prompts) < prompts_per_step:
        raise ValueError("need len(prompts) == len(answers) >= prompts_per_step")
    if warmup_steps < 1 or steps < 1:
        raise ValueError("need warmup_steps >= 1 (the end of the last warm-up step starts the clock) and steps >= 1")
    # Must be set before transformers / huggingface_hub are imported to take effect.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)

    tokenizer = _build_tokenizer(vocab)
    model = _build_model(arch, len(tokenizer), n_layer, n_head, n_embd, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once

    # Completion tokens sampled at each global step; the reward function sees every completion.
    tokens_at_step: dict[int, int] = {}

    def reward_ends_with_answer(prompts, completions, completion_ids, answer, trainer_state, **_):
        step = trainer_state.global_step
        tokens_at_step[step] = tokens_at_step.get(step, 0) + sum(len(ids) for ids in completion_ids)
        return [1.0 if c.strip().endswith("=" + a) else 0.0 for c, a in zip(completions, answer)]

    step_end_times: list[float] = []

    class _Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            torch.set_num_threads(threads)  # in case anything in Trainer/accelerate setup changed it

        def on_step_end(self, args, state, control, **kw):
            # Step-end to step-end covers generation, scoring, backward, optimizer and dataloader work.
            step_end_times.append(time.perf_counter())

    total_steps = warmup_steps + steps
    with tempfile.TemporaryDirectory(prefix="trl_baseline_") as tmp:
        config = GRPOConfig(
            output_dir=tmp,
            use_cpu=True,
            bf16=False,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            seed=seed,
            max_steps=total_steps,
            learning_rate=lr,
            lr_scheduler_type="constant",
            # TRL turns checkpointing on by default (via the deprecated `gradient_checkpointing` alias);
            # a tiny model needs no memory saving and it would add a recompute forward poise does not pay.
            activation_checkpointing=False,
            # One optimizer step == one generation batch of prompts_per_step prompts x group_size completions.
            per_device_train_batch_size=prompts_per_step * group_size,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_iterations=1,
            num_generations=group_size,
            max_completion_length=max_new_tokens,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            beta=0.0,
            dataloader_num_workers=0,
            # HF generate stops a row only on EOS (or max_new_tokens); min_new_tokens masks EOS instead.
            generation_kwargs={"min_new_tokens": max_new_tokens} if ignore_eos else None,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_ends_with_answer,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": list(prompts), "answer": list(answers)}),
            processing_class=tokenizer,
            callbacks=[_Timer()],
        )
        trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps in a printer; keep stdout for our JSON
        trainer.train()

    timed = len(step_end_times) - warmup_steps
    wall = step_end_times[-1] - step_end_times[warmup_steps - 1]
    # Reward calls during step i see global_step == i (it increments after the optimizer step).
    timed_tokens = sum(n for s, n in tokens_at_step.items() if s >= warmup_steps)
    return {
        "steps_per_s": timed / wall,
        "sampled_tokens_per_s": timed_tokens / wall,
        "mean_completion_tokens": timed_tokens / (timed * prompts_per_step * group_size),
        "wall_s": wall,
        "timed_steps": timed,
        "n_params": n_params,
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
    }


def _smoke_problems(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    import random

    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(n):
        terms = [rng.randint(0, 9) for _ in range(rng.randint(2, 4))]
        prompts.append("Q:" + "+".join(map(str, terms)) + "=")
        answers.append(str(sum(terms)))
    return prompts, answers


SMOKE_VOCAB = list("0123456789+-=;:Q A#")

if __name__ == "__main__":
    prompts, answers = _smoke_problems(64)
    result = run_trl_grpo(
        prompts, answers, SMOKE_VOCAB, n_layer=2, n_head=4, n_embd=128,
        group_size=8, prompts_per_step=8, max_new_tokens=48, steps=6,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
