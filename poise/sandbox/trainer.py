"""The GRPO-family RL trainer of the sandbox. It reads top to bottom like the algorithm:

    for each step:
        sample P training prompts, G responses each (temperature 1, KV-cached, batched; the noise of
                    (seed, step, row, position, token), so arms trained on one seed share it)
        grade them -> reward, correct, valid; reference log-probs for the KL
        (dynamic sampling only: keep the groups that are neither all right nor all wrong, and sample
                    up to cfg.dynamic_sampling more rounds of fresh prompts to fill the batch with such groups)
        rewards     <- candidate.shape_rewards(batch)            (optional)
        advantages  <- candidate.compute_advantages(batch)
        for each PPO epoch, for each mini-batch:                  (the ratio moves, so clipping acts)
            loss <- candidate.compute_policy_loss(logp, mb, adv)  (+ trainer-owned KL and entropy terms)
            clip the gradient norm, AdamW step
        log the step's curves

The trainer owns sampling, grading, the optimiser and every logged number: a candidate only maps
tensors to tensors, and whatever it returns is checked before it is used. A candidate's hooks are calls
into its hook process (``poise.isolation.hook``), which never sees the policy: its loss comes back as a
value and a gradient with respect to the log-probs, applied here through a surrogate.
"""

from __future__ import annotations

import dataclasses
import linecache
import math
import random
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from poise.algorithms.base import Algorithm, RolloutBatch, aggregate, kl_penalty, surrogate
from poise.algorithms.contract import CandidateError, check_loss, check_tensor
from poise.isolation.hook import HookError
from poise.sandbox.model import TinyGPT, generate, pad_prompts, response_logprobs
from poise.sandbox.noise import stream_id
from poise.sandbox.task import BOS, PAD, Problem, decode, encode, grade, training_problems


@dataclass(frozen=True)
class RLConfig:
    """Trainer hyperparameters. They are fixed across candidates (as in the paper)."""

    steps: int = 60
    prompts_per_step: int = 16  # P
    group_size: int = 8  # G, responses per prompt
    max_new_tokens: int = 96  # the generation budget; longer responses are truncated (and invalid)
    lr: float = 5e-5
    ppo_epochs: int = 1
    num_minibatches: int = 4  # updates per rollout batch: after the first, the ratio pi/pi_old != 1
    grad_clip: float = 1.0
    temperature: float = 1.0
    precision: str = "fp32"  # "bf16" runs the matrix multiplies in bfloat16
    ignore_eos: bool = False  # benchmarks only: every response runs to the budget


def _where(exc: BaseException, origin: str) -> str:
    """' (file.py line 12: `code`)' for the innermost traceback frame inside the candidate's source."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == origin]
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or (linecache.getline(f.filename, f.lineno) if f.lineno else "")).strip()
    return f" ({origin} line {f.lineno}: `{line}`)" if line else f" ({origin} line {f.lineno})"


def call_candidate(algo: Algorithm, hook: str, fn: Callable, *args):
    try:
        return fn(*args)
    except CandidateError:
        raise
    except HookError as e:  # the hook process's message already names the hook, the error and the line
        raise CandidateError(str(e)) from None
    except Exception as e:
        raise CandidateError(f"{hook} raised {type(e).__name__}: {e}{_where(e, algo.origin)}") from None


def shaped_advantages(algo: Algorithm, batch: RolloutBatch, step: int) -> Tensor:
    """The advantages every engine trains on, [N, T] and zero off the response: the candidate's shape_rewards
    (which replace ``batch.rewards`` in place), then its compute_advantages, each checked (`check_tensor`)."""
    N, T = batch.mask.shape
    acfg = algo.config
    if algo.shape_rewards is not None:
        shaped = call_candidate(algo, "shape_rewards", algo.shape_rewards, batch.clone(), acfg)
        batch.rewards = check_tensor(shaped, "shape_rewards", [(N,)], f"at step {step}").detach().float()
    adv = call_candidate(algo, "compute_advantages", algo.compute_advantages, batch.clone(), acfg)
    adv = check_tensor(adv, "compute_advantages", [(N, T), (N,)], f"at step {step}").detach().float()
    if adv.dim() == 1:
        adv = adv[:, None]
    return adv.to(batch.mask.device).expand(N, T) * batch.mask


def policy_loss(algo: Algorithm, logp: Tensor, ent: Tensor | None, mb: RolloutBatch, adv: Tensor,
                step: int) -> tuple[Tensor, float | None]:
    """The loss the policy trains on, for this trainer and TRL's alike: the candidate's compute_policy_loss on a
    leaf copy of the log-probs, applied through its value and gradient (the one contract for poise's own code
    and for the hook process), plus the trainer-owned KL and entropy terms of its config. Also the clip
    fraction the candidate reports, kept in [0, 1] for the curves (None when it reports none)."""
    acfg = algo.config
    leaf = logp.detach().requires_grad_(True)
    out = call_candidate(algo, "compute_policy_loss", algo.compute_policy_loss, leaf, mb, adv, acfg)
    loss, info = check_loss(out, f"at step {step}")
    (g,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    loss = surrogate(loss.detach(), torch.zeros_like(leaf) if g is None else g, logp)
    if acfg.kl_coef:
        loss = loss + acfg.kl_coef * aggregate(kl_penalty(logp, mb.ref_logp, acfg.kl_type), mb.mask,
                                               acfg.loss_agg, mb.max_len)
    if acfg.entropy_coef:
        assert ent is not None  # the caller computes entropies when acfg.entropy_coef != 0
        loss = loss - acfg.entropy_coef * aggregate(ent, mb.mask, acfg.loss_agg, mb.max_len)
    cf = info.get("clip_frac") if isinstance(info, dict) else None
    if isinstance(cf, (int, float)) or (isinstance(cf, Tensor) and cf.numel() == 1):
        cf = float(cf)
        return loss, (min(max(cf, 0.0), 1.0) if math.isfinite(cf) else 0.0)
    return loss, None


def build_prompts(problems: list[Problem], repeat: int) -> Tensor:
    ids = [[BOS, *encode(p.prompt)] for p in problems for _ in range(repeat)]
    return pad_prompts(ids)


def uses_reference(algo: Algorithm) -> bool:
    """Whether the algorithm needs the reference log-probs of every response: a KL term in its loss, or
    code that reads ``ref_logp``. Otherwise the reference forward, a fifth of a step, is skipped."""
    return algo.config.kl_coef != 0 or not algo.source or "ref_logp" in algo.source


def rollout(policy: TinyGPT, ref: TinyGPT, problems: list[Problem], cfg: RLConfig,
            stream: int, need_ref: bool = True) -> tuple[RolloutBatch, Tensor, Tensor, Tensor]:
    """Sample G responses per problem and package them as a RolloutBatch (plus prompts, tokens and the
    per-token KL to the reference of the rows it was measured on, for the KL curve).

    Without ``need_ref`` the reference runs on the first response of each group only (an eighth of the
    rows at G = 8), enough for the KL curve, and the batch's ``ref_logp`` is ``old_logp``."""
    G = cfg.group_size
    dev = next(policy.parameters()).device
    prompts = build_prompts(problems, G).to(dev)
    s = generate(policy, prompts, cfg.max_new_tokens, cfg.temperature, stream=stream, precision=cfg.precision,
                 ignore_eos=cfg.ignore_eos)
    tokens_cpu, finished_cpu = s.tokens.cpu(), s.finished.cpu()
    graded = [grade(decode(tokens_cpu[i]), bool(finished_cpu[i]), problems[i // G]) for i in range(len(prompts))]
    valid = torch.tensor([g[0] for g in graded], device=dev)
    correct = torch.tensor([g[1] for g in graded], device=dev)
    with torch.no_grad():
        if need_ref:
            ref_logp, _ = response_logprobs(ref, prompts, s.tokens, s.mask, cfg.precision)
            kl_rows = slice(None)
            kl_ref = ref_logp
        else:
            kl_rows = slice(None, None, G)
            kl_ref, _ = response_logprobs(ref, prompts[kl_rows], s.tokens[kl_rows], s.mask[kl_rows], cfg.precision)
            ref_logp = s.logp
    kl = (kl_penalty(s.logp[kl_rows], kl_ref, "k3") * s.mask[kl_rows]).sum() / s.mask[kl_rows].sum().clamp_min(1)
    batch = RolloutBatch(
        rewards=correct.float(), correct=correct, valid=valid, lengths=s.lengths, mask=s.mask,
        group_ids=torch.arange(len(problems), device=dev).repeat_interleave(G), old_logp=s.logp, ref_logp=ref_logp,
        entropy=s.entropy, truncated=~s.finished, group_size=G, max_len=cfg.max_new_tokens)
    return batch, prompts, s.tokens, kl


def signal_groups(batch: RolloutBatch) -> Tensor:
    """Row indices of the groups whose responses are not all right or all wrong: the groups that carry a
    task signal (DAPO's dynamic-sampling filter, on accuracy as verl's ``filter_groups.metric=acc``)."""
    c = batch.correct.view(-1, batch.group_size)
    mixed = c.any(1) & ~c.all(1)
    return mixed.repeat_interleave(batch.group_size).nonzero().squeeze(1)


def concat_rollouts(parts: list[tuple[RolloutBatch, Tensor, Tensor]]) -> tuple[RolloutBatch, Tensor, Tensor]:
    """Several rollouts' rows as one batch: prompts left-padded and responses right-padded to the widest,
    groups renumbered 0, 1, ... in order (rows of a group stay contiguous)."""
    Lp = max(p.shape[1] for _, p, _ in parts)
    T = max(t.shape[1] for _, _, t in parts)
    prompts = torch.cat([F.pad(p, (Lp - p.shape[1], 0), value=PAD) for _, p, _ in parts])
    tokens = torch.cat([F.pad(t, (0, T - t.shape[1]), value=PAD) for _, _, t in parts])
    kw: dict = {}
    for f in dataclasses.fields(RolloutBatch):
        vals = [getattr(b, f.name) for b, _, _ in parts]
        if not isinstance(vals[0], Tensor):
            kw[f.name] = vals[0]
        elif vals[0].dim() == 2:
            kw[f.name] = torch.cat([F.pad(v, (0, T - v.shape[1])) for v in vals])
        else:
            kw[f.name] = torch.cat(vals)
    kw["group_ids"] = torch.arange(len(kw["rewards"]) // parts[0][0].group_size,
                                   device=tokens.device).repeat_interleave(parts[0][0].group_size)
    return RolloutBatch(**kw), prompts, tokens


def refill(policy: TinyGPT, ref: TinyGPT, cfg: RLConfig, first: tuple[RolloutBatch, Tensor, Tensor], seed: int,
           step: int, exclude: set[str], max_rounds: int, need_ref: bool) -> tuple[RolloutBatch, Tensor, Tensor, int, int]:
    """Dynamic sampling: the groups of the ``first`` rollout that carry a signal, then those of up to ``max_rounds``
    more rollouts of fresh prompts until the batch holds ``cfg.prompts_per_step`` of them. Returns the batch, its
    prompts and tokens, the tokens the extra rounds sampled, and the rounds in all."""
    batch, prompts, tokens = first
    i = signal_groups(batch)
    kept = [(batch.select(i), prompts[i], tokens[i])]
    have, rounds, sampled = len(i) // cfg.group_size, 1, 0
    while have < cfg.prompts_per_step and rounds <= max_rounds:
        # extra rounds draw their prompts and noise from their own streams, so the first round's (and every later
        # step's) stay the ones a fixed-batch arm sees on this seed
        extra = training_problems(random.Random(f"rl/{seed}/{step}/{rounds}"), cfg.prompts_per_step, exclude)
        b, p, t, _ = rollout(policy, ref, extra, cfg, stream_id("rl", seed, step, rounds), need_ref)
        sampled += int(b.mask.sum())
        i = signal_groups(b)[:(cfg.prompts_per_step - have) * cfg.group_size]
        kept.append((b.select(i), p[i], t[i]))
        have += len(i) // cfg.group_size
        rounds += 1
    return (*concat_rollouts(kept), sampled, rounds)


def train_rl(algo: Algorithm, policy: TinyGPT, ref: TinyGPT, cfg: RLConfig, seed: int, exclude: set[str],
             on_step: Callable[[int, dict], None] | None = None, problems: list[Problem] | None = None) -> list[dict]:
    """Train ``policy`` in place with ``algo``; returns the per-step curves. Raises CandidateError.
    Training prompts are drawn from the task (never a held-out one) unless ``problems`` fixes them
    (the throughput benchmark feeds the same prompts to every trainer it compares); dynamic sampling's extra
    rounds always draw from the task.

    With ``algo.config.dynamic_sampling`` = k, a step trains only the groups whose answers are neither all right
    nor all wrong (filtered on correctness, as verl's ``filter_groups.metric=acc``), drawing up to k more rounds of
    fresh prompts to fill the batch. Unlike verl, which stops the run when its ``max_num_gen_batches`` (1 + k) runs
    out, a step then trains the groups it found (on smaller mini-batches), and takes no step when it found none."""
    torch.manual_seed(seed)
    dev = next(policy.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    rng = random.Random(f"rl/{seed}")
    acfg = algo.config
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    params = [p for p in policy.parameters()]
    need_ref = uses_reference(algo)
    if acfg.dynamic_sampling and cfg.group_size < 2:
        raise CandidateError(f"dynamic_sampling keeps groups whose answers differ, and a group of {cfg.group_size} "
                             f"response never does: remove dynamic_sampling from CONFIG or train with groups of 2 or more")
    curves: list[dict] = []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        if problems is None:
            step_problems = training_problems(rng, cfg.prompts_per_step, exclude)
        else:
            step_problems = [problems[(step * cfg.prompts_per_step + i) % len(problems)]
                             for i in range(cfg.prompts_per_step)]
        batch, prompts, tokens, kl = rollout(policy, ref, step_problems, cfg, stream_id("rl", seed, step), need_ref)
        # the logged statistics of the samples (accuracy, validity, entropy, length, KL, the group shares,
        # truncation) are of this first round: the same prompts and noise as any other arm trained on this seed,
        # whatever dynamic sampling adds. reward and adv_abs_mean are of the trained rows; sampled_tokens counts
        # every round (the cost)
        seen, sampled, rounds = batch, int(batch.mask.sum()), 1
        if acfg.dynamic_sampling:
            batch, prompts, tokens, extra_tokens, rounds = refill(policy, ref, cfg, (batch, prompts, tokens), seed,
                                                                   step, exclude, acfg.dynamic_sampling, need_ref)
            sampled += extra_tokens
        t_sample = time.perf_counter() - t0
        N, T = batch.mask.shape
        task_reward = float(seen.rewards.mean())
        adv = shaped_advantages(algo, batch, step) if N else batch.mask

        policy.train()
        clip_fracs, grad_norms, losses = [], [], []
        for _ in range(cfg.ppo_epochs if N else 0):  # dynamic sampling found no group with a signal: no update
            perm = torch.randperm(N, generator=gen, device=dev)
            for idx in perm.chunk(cfg.num_minibatches):
                mb = batch.select(idx)
                logp, ent = response_logprobs(policy, prompts[idx], tokens[idx], mb.mask, cfg.precision,
                                              with_entropy=acfg.entropy_coef != 0)
                loss, clip = policy_loss(algo, logp, ent, mb, adv[idx], step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if not torch.isfinite(gn):
                    raise CandidateError(f"the gradient became non-finite at step {step}: the loss is numerically "
                                         f"unstable (check exp() of unclamped log-ratios and divisions)")
                opt.step()
                grad_norms.append(float(gn))
                losses.append(float(loss.detach()))
                if clip is not None:
                    clip_fracs.append(clip)

        m, ntok = seen.mask, seen.mask.sum().clamp_min(1)
        groups = seen.rewards.view(-1, cfg.group_size) if len(seen.rewards) % cfg.group_size == 0 else seen.rewards[None]
        row = {
            "step": step,
            # of the trained rows, after the candidate's shaping (nothing trained: the first round's task reward)
            "reward": float(batch.rewards.mean()) if N else task_reward,
            "accuracy": task_reward,
            "validity": float(seen.valid.float().mean()),
            "entropy": float((seen.entropy * m).sum() / ntok),
            "response_length": float(seen.lengths.float().mean()),
            # k3 estimate of KL(pi_old || pi_ref) per token (see rollout); k3 >= 0, and float rounding of
            # exp(d) - d - 1 near d = 0 must not log -6e-10
            "kl": max(0.0, float(kl)),
            "clip_frac": sum(clip_fracs) / len(clip_fracs) if clip_fracs else 0.0,
            "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
            "loss": sum(losses) / len(losses) if losses else 0.0,
            "adv_abs_mean": float((adv.abs() * batch.mask).sum() / batch.mask.sum().clamp_min(1)),
            # shaped rewards when the batch is the first round (shaping wrote them in place); with dynamic
            # sampling, the first round's task rewards: the groups its filter drops
            "zero_std_groups": float((groups.std(1) == 0).float().mean()),
            # groups in which no response is correct: the sparse-reward regime of the hard problems
            "all_fail_groups": float((seen.correct.view(-1, cfg.group_size).sum(1) == 0).float().mean())
            if len(seen.correct) % cfg.group_size == 0 else float(not bool(seen.correct.any())),
            "truncated": float(seen.truncated.float().mean()),
            "sampled_tokens": sampled,
            "sample_s": t_sample,
            "step_s": time.perf_counter() - t0,
        }
        if acfg.dynamic_sampling:
            row["rollout_rounds"] = rounds
            row["trained_groups"] = N // cfg.group_size
        curves.append(row)
        if on_step is not None:
            on_step(step, row)
    policy.eval()
    return curves
