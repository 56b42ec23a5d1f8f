"""The text poise hands to verl: the plugin module of a candidate and the settings that make verl train
with it. Pure functions, shared by `poise export --to verl` and the verl backend."""

from __future__ import annotations

from poise.isolation.text import in_docstring, printable

# verl's KL estimators by poise's name for them
VERL_KL = {"k1": "kl", "k2": "mse", "k3": "low_var_kl"}

# the verl settings poise sets for the candidate: a backend config's overrides may not change them
OWNED = ("algorithm.adv_estimator", "algorithm.use_kl_in_reward", "reward.custom_reward_function",
         "custom_reward_function", "actor_rollout_ref.actor.policy_loss.loss_mode", "actor_rollout_ref.actor.clip_ratio",
         "actor_rollout_ref.actor.loss_agg_mode", "actor_rollout_ref.actor.use_kl_loss",
         "actor_rollout_ref.actor.kl_loss", "actor_rollout_ref.actor.entropy_coeff")


def plugin_module(module: str, source: str, hooks: list[str], trusted: bool, origin: str, doc: str) -> str:
    """A module that registers ``source`` with verl's registries as ``module`` when verl imports it (see
    `poise.backends.verl.plugin`); ``doc`` heads it, as its docstring. ``module`` must be an identifier;
    everything else may be anyone's text: it is written as string literals, never as code."""
    if not module.isidentifier():
        raise ValueError(f"{module!r} is not a Python module name")
    doc = "\n".join(in_docstring(printable(ln)).rstrip() for ln in doc.splitlines())
    return (f'"""{doc}\n"""\n\n'
            f"from poise.backends.verl.plugin import compute_score, register\n\n"
            f"SOURCE = {source!r}\n\n"
            f"NAME = register({module!r}, SOURCE, origin={origin!r}, trusted={trusted!r}, hooks={sorted(hooks)!r})\n\n"
            f'__all__ = ["NAME", "SOURCE", "compute_score"]\n')


def algorithm_settings(module: str, config: dict, plugin_path: str, needs_ref: bool = False) -> list[str]:
    """verl settings (Hydra overrides) for the plugin ``module`` at ``plugin_path`` and the candidate's
    CONFIG (an `AlgoConfig` as a dict): its estimator, its loss, poise's reward function, and its clip,
    aggregation, KL and entropy terms as verl's own. ``needs_ref``: the candidate reads ``ref_logp``, which
    verl computes only with its KL loss on, so it is turned on (with the candidate's coefficient, maybe 0)."""
    kl = float(config.get("kl_coef", 0.0))
    actor = "actor_rollout_ref.actor"
    return [f"algorithm.adv_estimator={module}", "algorithm.use_kl_in_reward=False",
            f"reward.custom_reward_function.path={plugin_path}", "reward.custom_reward_function.name=compute_score",
            f"{actor}.policy_loss.loss_mode={module}",
            f"{actor}.clip_ratio_low={float(config.get('clip_low', 0.2))}",
            f"{actor}.clip_ratio_high={float(config.get('clip_high', 0.2))}",
            f"{actor}.loss_agg_mode={config.get('loss_agg', 'token-mean')}",
            f"{actor}.use_kl_loss={'True' if kl or needs_ref else 'False'}", f"{actor}.kl_loss_coef={kl}",
            f"{actor}.kl_loss_type={VERL_KL.get(config.get('kl_type', 'k3'), 'low_var_kl')}",
            f"{actor}.entropy_coeff={float(config.get('entropy_coef', 0.0))}"]


def launch_script(module: str, config: dict, needs_ref: bool = False) -> str:
    """A bash script that runs verl.trainer.main_ppo with the plugin beside it: the model and data from the
    environment, any other verl setting as an argument (a repeated Hydra override wins)."""
    settings = algorithm_settings(module, config, f"$HERE/{module}.py", needs_ref) + [
        "actor_rollout_ref.rollout.n=${GROUP:-8}", "actor_rollout_ref.model.path=$MODEL", "data.train_files=$TRAIN",
        "data.val_files=$VAL"]
    args = " \\\n    ".join(f'"{x}"' for x in settings)  # paths with spaces stay one argument
    ds = int(config.get("dynamic_sampling", 0) or 0)
    dropped = (f"# Not carried over: CONFIG's dynamic_sampling={ds} (DAPO's refill of groups without a signal).\n"
               f"# verl's main trainer keeps a fixed batch; verl's DAPO recipe refills it with\n"
               f"# algorithm.filter_groups.enable=True, metric=acc, max_num_gen_batches={ds + 1}, and stops the run\n"
               f"# when those batches run out, where poise trains the groups it found.\n" if ds else "")
    return f"""#!/usr/bin/env bash
# Train with verl and the poise candidate {module} (written by `poise export --to verl`).
#   MODEL=... TRAIN=train.parquet VAL=test.parquet bash {module}_verl.sh [more verl settings, e.g. trainer.n_gpus_per_node=8]
# Data: verl's parquet format (prompt, reward_model.ground_truth), e.g. from verl's examples/data_preprocess/gsm8k.py.
# Needs verl and poise installed in the same environment, and bubblewrap for the jail (or POISE_UNSAFE_NO_JAIL=1).
{dropped}set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
export PYTHONPATH="$HERE${{PYTHONPATH:+:$PYTHONPATH}}"
export VERL_USE_EXTERNAL_MODULES="{module}${{VERL_USE_EXTERNAL_MODULES:+,$VERL_USE_EXTERNAL_MODULES}}"
MODEL="${{MODEL:-Qwen/Qwen2.5-Math-1.5B}}"
TRAIN="${{TRAIN:?set TRAIN to a training parquet file}}"
VAL="${{VAL:?set VAL to a validation parquet file}}"
exec python3 -m verl.trainer.main_ppo \\
    {args} \\
    "$@"
"""
