"""What an exported verl plugin runs inside verl: a poise candidate behind verl's own registries.

`poise export RUN ID --to verl` writes a small module that holds the candidate's source and calls
`register` when verl imports it (verl imports every module named in ``VERL_USE_EXTERNAL_MODULES``).
`register` adds, under the name ``poise_<name>``:

- an advantage estimator (``register_adv_est``): verl's `get_adv_estimator_fn` returns it;
- a policy loss (``register_policy_loss``): the candidate's ``compute_policy_loss``, or poise's default
  PPO clip with its CONFIG when it defines none. Always registered, because verl's "vanilla" loss is not
  poise's (it adds dual-clip, ratio capped at 3 for negative advantages), and the exported candidate must
  train on the loss it was measured with;
- ``compute_score``, the reward function to name in ``custom_reward_function``: poise's math grader,
  returning the score and, through verl's ``reward_extra_info``, whether each response was valid and
  correct.

**The inputs verl does not give an estimator.** verl calls an estimator with the token-level rewards,
the response mask and the group index only; a poise candidate reads a whole `RolloutBatch` (correct,
valid, lengths, log-probs, entropies). `register` therefore wraps verl's ``compute_advantage``: for a
poise name it gathers those fields from the step's data and passes them on as ``poise_extras``:

    rewards    the token-level rewards summed over the response, 0 for a truncated one (with the
               plugin's compute_score: 1 for a correct, finished response, as poise's task reward)
    correct    ``reward_extra_info["poise_correct"]``, and not truncated
    valid      ``reward_extra_info["poise_valid"]``, and not truncated
    lengths    the response mask summed; ``truncated``: a response that fills the whole budget (verl
               gives the estimator no token ids, so one whose end token is exactly the last one counts
               as truncated too: at most one response length in the budget's worth is misread)
    old_logp   ``old_log_probs``; ``ref_logp``: ``ref_log_prob`` when verl computed it, else old_logp
    entropy    ``entropys`` when present, else the sampled tokens' surprisal ``-old_logp`` (its
               one-sample estimate: verl does not keep per-token entropies in the batch)
    group_ids  the ``uid`` index, numbered in order of first appearance (verl's groups need not be
               contiguous)

Without the plugin's ``compute_score`` there is no ``poise_valid``/``poise_correct`` and the estimator
stops with a message that says so, rather than guess them from the reward.

verl's policy loss gets even less (log-probs, advantages, the mask): a candidate's
``compute_policy_loss`` sees a batch whose ``old_logp``, ``mask``, ``lengths`` and ``max_len`` are
real and whose rewards and entropies are NaN and correct/valid false, so a loss that needs them fails
loudly on the first step (keep such logic in ``compute_advantages``). The loss is aggregated per
micro-batch, as in poise's trainers; verl's KL and entropy terms stay verl's (the launch script sets
them from the candidate's CONFIG).

**The candidate's code never runs in verl's processes.** Each process that needs it (verl's driver
for the advantages, each actor worker for the loss) starts the candidate's hook process, jailed as
poise's own trainers run it, sends it detached tensors and checks what comes back. Where the jail
cannot start, only a built-in's code (``trusted``) or a run that chose ``--unsafe-no-jail`` runs in an
unjailed hook process, with a warning, as in poise itself.
"""

from __future__ import annotations

import ast
import atexit
import dataclasses
import importlib.abc
import importlib.util
import os
import sys
import threading
from typing import Any

import numpy as np
import torch

from poise.algorithms.base import Algorithm, RolloutBatch
from poise.backends.trl.grader import extract_answer, same_answer
from poise.sandbox.trainer import policy_loss, shaped_advantages

PREFIX = "poise_"
_SOURCES: dict[str, tuple[str, str]] = {}  # poise name -> (source, origin)
_TRUSTED: dict[str, bool] = {}  # poise wrote it (a built-in, the offline implementer): unjailed if no jail
_HOOKS: dict[str, Any] = {}  # poise name -> its hook process in this process
_lock = threading.Lock()
_steps: dict[str, int] = {}


def defines(source: str) -> set[str]:
    """The top-level functions a candidate defines, read without running it."""
    return {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}


def algorithm(name: str) -> Algorithm:
    """The candidate behind ``name``, its hooks calls into its jailed hook process (started on first use)."""
    from poise.isolation.hook import HookProcess, choose_isolation

    with _lock:
        if name not in _HOOKS:
            source, origin = _SOURCES[name]
            iso = choose_isolation(_TRUSTED.get(name, False), os.environ.get("POISE_UNSAFE_NO_JAIL") == "1")
            if iso.warning:
                print(iso.warning, file=sys.stderr)
            hook = HookProcess(source, name, origin, jailed=iso.jailed)
            hook.__enter__()
            atexit.register(hook.close)
            _HOOKS[name] = hook
        return _HOOKS[name].algorithm()


def close_all() -> None:
    """Stop every hook process this process started (they otherwise live as long as it: verl's driver and
    workers call the candidate every step)."""
    with _lock:
        for hook in _HOOKS.values():
            hook.close()
        _HOOKS.clear()


def group_ids(index) -> torch.Tensor:
    """verl's group index (uids, any hashable) as 0..P-1 in order of first appearance."""
    seen: dict[Any, int] = {}
    return torch.tensor([seen.setdefault(u, len(seen)) for u in list(index)], dtype=torch.long)


def rollout_batch(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index, extras: dict) -> RolloutBatch:
    """A poise `RolloutBatch` from verl's estimator inputs and the extras (see the module's docstring)."""
    for need in ("poise_valid", "poise_correct", "old_log_probs"):
        if need not in extras:
            raise ValueError(f"the poise estimator needs {need!r}, which this step's data lacks: train with the "
                             f"plugin's reward function (custom_reward_function.name=compute_score, its path the "
                             f"plugin file), as the exported launch script does")
    mask = response_mask.detach().float().cpu()
    N, T = mask.shape
    lengths = mask.sum(-1).long()
    truncated = lengths >= T
    old = extras["old_log_probs"].detach().float().cpu()
    ref = extras.get("ref_log_prob")
    ent = extras.get("entropys")
    g = group_ids(index)
    sizes = torch.bincount(g)
    return RolloutBatch(
        rewards=token_level_rewards.detach().float().cpu().sum(-1) * ~truncated,
        correct=torch.as_tensor(np.asarray(extras["poise_correct"], dtype=bool)) & ~truncated,
        valid=torch.as_tensor(np.asarray(extras["poise_valid"], dtype=bool)) & ~truncated,
        lengths=lengths, mask=mask, group_ids=g, old_logp=old,
        ref_logp=old if ref is None else ref.detach().float().cpu(),
        entropy=(-old * mask) if ent is None else ent.detach().float().cpu(),
        truncated=truncated, group_size=int(sizes.max()) if len(sizes) else 1, max_len=T)


def estimator(name: str):
    def poise_advantages(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index=None, config=None,
                         poise_extras: dict | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if index is None:
            raise ValueError("the poise estimator needs verl's group index (uid): GRPO-style rollouts, n > 1")
        batch = rollout_batch(token_level_rewards, response_mask, index, poise_extras or {})
        step = _steps[name] = _steps.get(name, -1) + 1
        correct = batch.correct.clone()
        adv = shaped_advantages(algorithm(name), batch, step)
        if os.environ.get(CURVES_ENV):
            log_step(os.environ[CURVES_ENV], step, batch, correct, adv)
        adv = adv.to(device=token_level_rewards.device, dtype=token_level_rewards.dtype)
        return adv, adv

    poise_advantages.__name__ = f"{name}_advantages"
    return poise_advantages


CURVES_ENV = "POISE_VERL_CURVES"  # where the verl backend wants the estimator's per-step statistics


def step_stats(batch: RolloutBatch, correct: torch.Tensor, adv: torch.Tensor) -> dict:
    """The curve values verl does not log but poise's reflection reads: validity, the all-fail and
    zero-variance groups (the sparse-reward regime), the advantages' size, after the candidate's shaping."""
    g, m = batch.group_ids, batch.mask
    groups = int(g.max()) + 1 if g.numel() else 0
    hits = torch.zeros(groups).index_add_(0, g, correct.float())
    r = batch.rewards.double()
    mean = torch.zeros(groups, dtype=torch.float64).index_add_(0, g, r) / torch.bincount(g, minlength=groups).clamp_min(1)
    spread = torch.zeros(groups, dtype=torch.float64).index_add_(0, g, (r - mean[g]).abs())
    return {"accuracy": float(correct.float().mean()), "validity": float(batch.valid.float().mean()),
            "reward": float(r.mean()), "all_fail_groups": float((hits == 0).float().mean()),
            "zero_std_groups": float((spread == 0).float().mean()),
            "adv_abs_mean": float((adv.abs() * m).sum() / m.sum().clamp_min(1)),
            "sampled_tokens": int(m.sum()), "truncated": float(batch.truncated.float().mean())}


def log_step(path: str, step: int, batch: RolloutBatch, correct: torch.Tensor, adv: torch.Tensor) -> None:
    import json

    with open(path, "a") as f:
        f.write(json.dumps({"step": step, **step_stats(batch, correct, adv)}) + "\n")


def loss(name: str):
    def poise_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                          response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config=None,
                          rollout_is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        mask = response_mask.detach().to(log_prob.dtype)
        N, T = mask.shape
        lengths = mask.sum(-1).long()
        nan = torch.full((N,), float("nan"), device=log_prob.device)
        no = torch.zeros(N, dtype=torch.bool, device=log_prob.device)
        mb = RolloutBatch(rewards=nan, correct=no, valid=no, lengths=lengths, mask=mask,
                          group_ids=torch.arange(N, device=log_prob.device), old_logp=old_log_prob.detach(),
                          ref_logp=old_log_prob.detach(), entropy=torch.full_like(mask, float("nan")),
                          truncated=lengths >= T, group_size=1, max_len=T)
        algo = algorithm(name)
        # verl adds its own KL and entropy terms: the candidate's part only, through poise's surrogate
        own = dataclasses.replace(algo, config=dataclasses.replace(algo.config, kl_coef=0.0, entropy_coef=0.0))
        out, clip = policy_loss(own, log_prob, None, mb, advantages.detach(), _steps.get(name, 0))
        return out, {"actor/pg_clipfrac": 0.0 if clip is None else clip}

    poise_policy_loss.__name__ = f"{name}_policy_loss"
    return poise_policy_loss


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> dict:
    """verl's custom reward function: poise's grader. ``valid``: a final answer can be read (whether the
    response ended within the budget is decided from its length, by the estimator)."""
    answer = extract_answer(solution_str)
    correct = answer is not None and same_answer(answer, str(ground_truth))
    return {"score": float(correct), "poise_valid": answer is not None, "poise_correct": correct}


def _extras(data) -> dict:
    out = {k: data.non_tensor_batch[k] for k in ("poise_valid", "poise_correct") if k in data.non_tensor_batch}
    for k in ("old_log_probs", "ref_log_prob", "entropys"):
        if k in data.batch.keys():
            out[k] = data.batch[k]
    return out


def _wrap(ray_trainer) -> None:
    """verl's compute_advantage, with poise's extras handed to a poise estimator (the others unchanged)."""
    from verl.trainer.ppo import core_algos

    original = ray_trainer.compute_advantage
    if getattr(original, "poise_wrapped", False):
        return

    def compute_advantage(data, adv_estimator, *args, **kwargs):
        name = str(getattr(adv_estimator, "value", adv_estimator))
        if name not in _SOURCES:
            return original(data, adv_estimator, *args, **kwargs)
        if "response_mask" not in data.batch.keys():
            data.batch["response_mask"] = ray_trainer.compute_response_mask(data)
        adv, ret = core_algos.get_adv_estimator_fn(name)(
            data.batch["token_level_rewards"], data.batch["response_mask"], data.non_tensor_batch.get("uid"),
            kwargs.get("config"), poise_extras=_extras(data))
        data.batch["advantages"], data.batch["returns"] = adv, ret
        return data

    compute_advantage.poise_wrapped = True  # type: ignore[attr-defined]
    ray_trainer.compute_advantage = compute_advantage


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps verl's trainer module right after it is imported. The plugin is imported inside ``import verl``
    (VERL_USE_EXTERNAL_MODULES), before the trainer, and importing the trainer there would load every
    engine of verl in every one of its worker processes, which never train the advantages."""

    TARGET = "verl.trainer.ppo.ray_trainer"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _wrap(module)

        loader.exec_module = exec_and_wrap
        return spec


def _wrap_compute_advantage() -> None:
    module = sys.modules.get(_AfterImport.TARGET)
    if module is not None:
        _wrap(module)
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


def register(name: str, source: str, origin: str = "", trusted: bool = False, hooks: list[str] | None = None,
             wrap_trainer: bool = True) -> str:
    """Register the candidate with verl's registries under ``poise_<name>`` (returned). ``trusted``: poise
    wrote the code (a built-in, the offline implementer), so it may run unjailed where the jail cannot
    start, with a warning; other code needs the jail, or POISE_UNSAFE_NO_JAIL=1. ``hooks``: the functions it
    defines, as its hook process reported them at export (default: read from its top-level defs). ``wrap_trainer``: also wrap
    verl's compute_advantage (needs verl's trainer importable: it is, in verl's driver)."""
    from verl.trainer.ppo import core_algos

    key = name if name.startswith(PREFIX) else PREFIX + name
    if key in _SOURCES:
        if _SOURCES[key][0] != source:
            raise ValueError(f"{key} is already registered with other code; export under another name")
        return key
    hooks = list(hooks) if hooks is not None else sorted(defines(source))
    if "compute_advantages" not in hooks:
        raise ValueError(f"{key}: the candidate defines no compute_advantages(batch, cfg)")
    _SOURCES[key] = (source, origin or f"verl-plugin:{key}")
    _TRUSTED[key] = trusted
    core_algos.register_adv_est(key)(estimator(key))
    core_algos.register_policy_loss(key)(loss(key))
    if wrap_trainer:
        _wrap_compute_advantage()
    return key
