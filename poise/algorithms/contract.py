"""What a candidate's hooks must return, checked in one place for the trainer (``where`` = "at step 12")
and the verifier (``where`` = "on probe 'mixed groups'"), so a candidate that passes verification
meets the same rules in training:

    shape_rewards        a finite float tensor [N]
    compute_advantages   a finite float tensor [N, T] or [N]
    compute_policy_loss  (loss, metrics_dict), loss a finite scalar tensor computed from ``logp``
                         (it carries a gradient)

A broken rule raises `ContractError`, whose message names the hook, what came back, where, and how to
fix it.
"""

from __future__ import annotations

import torch
from torch import Tensor


class CandidateError(Exception):
    """The candidate algorithm failed or returned something unusable. The message says what and where."""


class ContractError(CandidateError):
    """A hook's output broke the interface (type, shape, finiteness, gradient)."""


def check_tensor(x, hook: str, shapes: list[tuple[int, ...]], where: str) -> Tensor:
    """``x`` when it is a finite tensor of one of ``shapes``."""
    want = " or ".join(str(list(s)) for s in shapes)
    if not isinstance(x, Tensor):
        raise ContractError(f"{hook} must return a torch.Tensor of shape {want}, got {type(x).__name__} {where}")
    if tuple(x.shape) not in shapes:
        raise ContractError(f"{hook} returned shape {list(x.shape)} {where}; expected {want} (N responses, T tokens); "
                            f"return one value per response or per response token")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ContractError(f"{hook} returned {bad} non-finite values (NaN or inf) of {x.numel()} {where}; guard "
                            f"divisions with an epsilon and handle degenerate groups (all correct, all wrong, a "
                            f"single response)")
    return x


def check_loss(out, where: str) -> tuple[Tensor, dict]:
    """(loss, metrics) from what ``compute_policy_loss`` returned, when the loss is a finite scalar with a
    gradient; metrics that are not a dict become {}."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ContractError(f"compute_policy_loss must return (loss, metrics_dict), got {type(out).__name__} {where}")
    loss, info = out
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        got = f"shape {list(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise ContractError(f"compute_policy_loss must return a scalar tensor loss, got {got} {where}; reduce with "
                            f"aggregate(loss_mat, batch.mask, cfg.loss_agg)")
    if not loss.requires_grad:
        raise ContractError(f"compute_policy_loss returned a loss with no gradient {where}: it must be computed from "
                            f"`logp` (did it call .detach() or .item()?)")
    if not torch.isfinite(loss):
        raise ContractError(f"compute_policy_loss returned a non-finite loss ({float(loss.detach())}) {where}; clamp "
                            f"log-ratios before exp() and guard divisions")
    return loss, info if isinstance(info, dict) else {}
