"""TRL's GRPOTrainer with a poise candidate in charge of the mechanism, as the sandbox's trainer does it:

    for each step (one generation batch, one optimizer step):
        TRL samples P prompts x G completions (plain `generate`, or vLLM in colocate mode)
        poise grades them -> correct, valid (an extractable answer, finished within the budget), lengths;
              log-probs and token entropies of the sampling policy; reference log-probs when the
              candidate uses them
        rewards     <- candidate.shape_rewards(batch)                        (optional)
        advantages  <- candidate.compute_advantages(batch)   token-level [N, T], replacing TRL's
        for each of the `micro_batches` passes (gradient accumulation):
            loss <- candidate.compute_policy_loss(logp, mb, adv)   value and d loss / d logp, applied
                    through a surrogate (+ the trainer-owned KL and entropy terms of the candidate's config)
        clip the gradient norm, optimizer step; log the step's curves (the sandbox's keys)

The candidate's hooks are calls into its jailed hook process, as in the sandbox; TRL owns sampling, the
optimiser and the model. TRL's own reward-based advantages are computed and then replaced.

Two differences from the sandbox's trainer, both TRL's defaults: one optimizer step per generation batch
(the micro-batches accumulate), so the importance ratio is 1 when the loss is taken and a clip range never
binds (the sandbox takes several steps per batch, where it does); and with vLLM, TRL's importance-sampling
correction for the sampler's log-probs is not applied to the candidate's loss."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from trl import GRPOTrainer

from poise.algorithms.base import Algorithm, RolloutBatch
from poise.algorithms.contract import CandidateError
from poise.backends.trl.grader import grade
from poise.sandbox.trainer import policy_loss, shaped_advantages, uses_reference

POISE_FIELDS = ("rewards", "correct", "valid", "lengths", "group_ids", "old_logp", "ref_logp", "entropy", "truncated")


def correctness_reward(completions: list[str], answer: list[str], completion_ids: list[list[int]] | None = None,
                       eos_token_id: int | None = None, **_: Any) -> list[float]:
    """The task reward as TRL's reward function: 1.0 for a correct final answer within the budget. (poise
    grades again where it also builds the batch; TRL's advantages from this reward are replaced.)"""
    out = []
    for i, text in enumerate(completions):
        finished = completion_ids is None or eos_token_id is None or eos_token_id in completion_ids[i]
        out.append(float(grade(text, finished, answer[i])[1]))
    return out


class PoiseGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, algorithm: Algorithm, max_new_tokens: int,
                 on_step: Callable[[int, dict], None] | None = None, **kw):
        super().__init__(*args, **kw)
        self.algo = algorithm
        self.max_new_tokens = max_new_tokens
        self.on_step = on_step
        self.curves: list[dict] = []
        self._row: dict = {}
        self._losses: list[float] = []
        self._clip: list[float] = []
        self._t_step: float | None = None
        # the frozen start: the reference log-probs of every response for a candidate that uses them (a KL term,
        # or code that reads ref_logp), else of one response per group, for the KL curve alone (as the sandbox)
        import copy

        self.full_ref = uses_reference(algorithm)
        self.poise_ref = copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval()
        for p in self.poise_ref.parameters():
            p.requires_grad_(False)

    # ---- one generation batch: grade, the candidate's rewards and advantages ---------------------------
    def _generate_and_score_completions(self, inputs):
        t0 = time.perf_counter()
        if self._t_step is None:
            self._t_step = t0  # the first step's time leaves out the trainer's set-up
        out = super()._generate_and_score_completions(inputs)
        ids, cmask = out["completion_ids"], out["completion_mask"]
        N, T = ids.shape
        G = self.num_generations
        eos = torch.tensor(self.eos_token_ids, device=ids.device)  # every id TRL stops on
        dev = ids.device
        lengths = cmask.sum(1).long()
        finished = torch.tensor([bool(torch.isin(ids[i, :lengths[i]], eos).any()) for i in range(N)], device=dev)
        texts = self.processing_class.batch_decode([ids[i, :lengths[i]] for i in range(N)], skip_special_tokens=True)
        graded = [grade(t, bool(f), str(x["answer"])) for t, f, x in zip(texts, finished.tolist(), inputs)]
        valid = torch.tensor([v for v, _ in graded], device=dev)
        correct = torch.tensor([c for _, c in graded], device=dev)
        input_ids = torch.cat([out["prompt_ids"], ids], dim=1)
        attention = torch.cat([out["prompt_mask"], cmask], dim=1)
        chunk = self.args.per_device_train_batch_size  # forward passes no larger than a training pass
        with torch.no_grad():
            old_logp, entropy, _ = self._get_per_token_logps_and_entropies(self.model, input_ids, attention, T,
                                                                           batch_size=chunk, compute_entropy=True)
            rows = torch.arange(N, device=dev) if self.full_ref else torch.arange(0, N, G, device=dev)
            ref_rows, _, _ = self._get_per_token_logps_and_entropies(self.poise_ref, input_ids[rows], attention[rows],
                                                                     T, batch_size=chunk)
        ref_logp = ref_rows if self.full_ref else old_logp  # unused by the candidate: a KL of zero, as in the sandbox
        mask = cmask.float()
        batch = RolloutBatch(rewards=correct.float(), correct=correct, valid=valid, lengths=lengths, mask=mask,
                             group_ids=torch.arange(N, device=dev) // G, old_logp=old_logp.float(),
                             ref_logp=ref_logp.float(), entropy=entropy.float(), truncated=~finished, group_size=G,
                             max_len=self.max_new_tokens)
        step = self.state.global_step
        task_reward = float(batch.rewards.mean())
        adv = shaped_advantages(self.algo, batch, step)
        out["advantages"] = adv
        out["old_per_token_logps"] = old_logp
        for f in POISE_FIELDS:
            out[f"poise_{f}"] = getattr(batch, f)
        ntok = mask.sum().clamp_min(1)
        d = ref_rows - old_logp[rows]  # k3 estimate of KL(pi_old || pi_ref) per token, on the rows the reference saw
        kl = ((torch.exp(d) - d - 1) * mask[rows]).sum() / mask[rows].sum().clamp_min(1)
        self._row = {
            "step": step,
            "reward": float(batch.rewards.double().mean()),  # float64: a huge shaped reward must not read as inf
            "accuracy": task_reward,
            "validity": float(valid.float().mean()),
            "entropy": float((batch.entropy * mask).sum() / ntok),
            "response_length": float(lengths.float().mean()),
            "kl": max(0.0, float(kl)),
            "adv_abs_mean": float((adv.double().abs() * mask).sum() / ntok),
            "zero_std_groups": float((batch.rewards.view(-1, G).std(1) == 0).float().mean()),
            "all_fail_groups": float((correct.view(-1, G).sum(1) == 0).float().mean()),
            "truncated": float((~finished).float().mean()),
            "sampled_tokens": int(mask.sum()),
            "sample_s": time.perf_counter() - t0,
        }
        return out

    # ---- one pass: the candidate's loss through its value and gradient ---------------------------------
    def _compute_loss(self, model, inputs):
        ids, cmask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], ids], dim=1)
        attention = torch.cat([inputs["prompt_mask"], cmask], dim=1)
        acfg = self.algo.config
        logp, ent, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention, ids.size(1),
                                                                compute_entropy=acfg.entropy_coef != 0)
        logp = logp.float()
        mb = RolloutBatch(**{f: inputs[f"poise_{f}"] for f in POISE_FIELDS}, mask=cmask.float(),
                          group_size=self.num_generations, max_len=self.max_new_tokens)
        step = self.state.global_step
        loss, clip = policy_loss(self.algo, logp, None if ent is None else ent.float(), mb, inputs["advantages"], step)
        if not torch.isfinite(loss):
            raise CandidateError(f"the loss became non-finite at step {step}: the loss is numerically unstable "
                                 f"(check exp() of unclamped log-ratios and divisions)")
        self._losses.append(float(loss.detach()))
        if clip is not None:
            self._clip.append(clip)
        return loss / self.current_gradient_accumulation_steps

    # ---- the step's curves, once the optimizer has stepped ---------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "grad_norm" in logs and self._row:
            gn = float(logs["grad_norm"])
            if not math.isfinite(gn):
                raise CandidateError(f"the gradient became non-finite at step {self._row['step']}: the loss is "
                                     f"numerically unstable")
            now = time.perf_counter()
            row = {**self._row, "clip_frac": sum(self._clip) / len(self._clip) if self._clip else 0.0,
                   "grad_norm": gn, "loss": sum(self._losses) / max(1, len(self._losses)),
                   "step_s": now - (self._t_step or now)}
            self._t_step = now
            self._row, self._losses, self._clip = {}, [], []
            self.curves.append(row)
            if self.on_step is not None:
                self.on_step(row["step"], row)
        super().log(logs, start_time)
