"""A CPU stand-in for ``verl.trainer.main_ppo``, for the verl backend's test on a machine without a GPU.

It trains nothing: verl's training loop needs GPUs. Everything around that loop is verl's own: ``import
verl`` loads the plugin named in VERL_USE_EXTERNAL_MODULES; the reward function is loaded from the path
and name poise's settings give; each step's made-up responses to the real training problems go through
verl's ``compute_advantage`` (which the plugin wraps) and the policy loss verl's registry returns for the
poise name, and verl's ``FileLogger`` writes the metrics. The "final checkpoint" is a small random Llama
saved in Hugging Face format where verl would write it, for the backend to score.

    python -m tests.backends.verl.cpu_main_ppo KEY=VALUE ...   (the overrides poise gives main_ppo)
"""

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import verl  # noqa: F401  (imports the plugin)
from verl import DataProto
from verl.trainer.ppo import core_algos, ray_trainer
from verl.utils.tracking import FileLogger


def main() -> None:
    args = dict(a.lstrip("+").split("=", 1) for a in sys.argv[1:])
    steps, n = int(args["trainer.total_training_steps"]), int(args["actor_rollout_ref.rollout.n"])
    batch, T = int(args["data.train_batch_size"]), int(args["data.max_response_length"])
    spec = importlib.util.spec_from_file_location("reward", args["reward.custom_reward_function.path"])
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    score = getattr(reward, args["reward.custom_reward_function.name"])
    loss_fn = core_algos.get_policy_loss_fn(args["actor_rollout_ref.actor.policy_loss.loss_mode"])
    df = pd.read_parquet(args["data.train_files"])
    rng = random.Random(int(args["data.seed"]))
    log = FileLogger("poise", "cpu")
    for step in range(1, steps + 1):
        rows = df.iloc[(step - 1) * batch: step * batch]
        texts, truths, uids = [], [], []
        for i, row in enumerate(rows.itertuples()):
            truth = row.reward_model["ground_truth"]
            for _ in range(n):
                texts.append(rng.choice([f"so \\boxed{{{truth}}}", "so \\boxed{-1}", "no idea"]))
                truths.append(truth)
                uids.append(f"{step}-{i}")
        scores = [score("poise", t, g) for t, g in zip(texts, truths)]
        N = len(texts)
        lengths = torch.tensor([rng.randint(1, T) for _ in range(N)])
        mask = (torch.arange(T)[None] < lengths[:, None]).long()
        tlr = torch.zeros(N, T)
        tlr[torch.arange(N), lengths - 1] = torch.tensor([s["score"] for s in scores])
        old = -torch.rand(N, T) * mask
        data = DataProto.from_dict(tensors={"token_level_rewards": tlr, "response_mask": mask, "old_log_probs": old},
                                   non_tensors={"uid": np.array(uids, dtype=object),
                                                "poise_valid": np.array([s["poise_valid"] for s in scores]),
                                                "poise_correct": np.array([s["poise_correct"] for s in scores])})
        data = ray_trainer.compute_advantage(data, adv_estimator=args["algorithm.adv_estimator"], config=None)
        logp = (old + 0.05 * torch.randn(N, T) * mask).requires_grad_(True)
        loss, m = loss_fn(old_log_prob=old, log_prob=logp, advantages=data.batch["advantages"],
                          response_mask=mask.bool(), loss_agg_mode=args["actor_rollout_ref.actor.loss_agg_mode"],
                          config=None)
        loss.backward()
        log.log({"critic/score/mean": float(tlr.sum(-1).mean()), "critic/rewards/mean": float(tlr.sum(-1).mean()),
                 "response_length/mean": float(lengths.float().mean()), "actor/pg_clipfrac": m["actor/pg_clipfrac"],
                 "actor/pg_loss": float(loss), "actor/grad_norm": float(logp.grad.norm()), "timing_s/step": 0.01},
                step)
    from poise.backends.trl.config import ModelConfig
    from poise.backends.trl.model import load_model, load_tokenizer

    out = Path(args["trainer.default_local_dir"]) / f"global_step_{steps}" / "actor" / "huggingface"
    mc = ModelConfig(name="random", hidden=32, layers=1, heads=2, intermediate=64)
    tok = load_tokenizer(mc)
    load_model(mc, tok, seed=0).save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
