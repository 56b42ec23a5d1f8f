"""Checks of a candidate on synthetic probe batches: base checks every algorithm must pass, and the
property tests behind the claims a proposal makes. This module never executes candidate code: the
algorithm it checks is a hook process's (``poise.isolation.hook``), so the probe batches go to the
jailed process and every verdict is reached here, on what comes back.

Base checks: each hook returns the right shape and finite values, gives the same answer twice, and
does not depend on the groups being contiguous (verl's uid-keyed layout); the policy loss is a finite
scalar with a gradient. (Whether a hook mutates its inputs no longer matters: each call gets its own
copies, in another process.) They run on several probes: the default four-kind
batch, shuffled rows, all-wrong and all-right batches, groups of one and two, a single token.

Claims: ``CLAIMS[name] = Claim(description, check)``, ``check(algo) -> (ok, message)``. A failure
message says what was observed, concretely enough to act on.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from poise.algorithms import contract
from poise.algorithms.base import Algorithm, RolloutBatch, default_policy_loss
from poise.algorithms.contract import CandidateError, ContractError
from poise.algorithms.probe import make_probe_batch
from poise.isolation.hook import HookError
from poise.isolation.process import describe, is_memory_error


class CandidateFailure(CandidateError):
    """Candidate code raised (the trainer's `CandidateError`, as the verifier sees it). ``memory`` when it ran
    out of memory (the report's stage is then "memory")."""

    def __init__(self, message: str, memory: bool = False):
        super().__init__(message)
        self.memory = memory


@dataclass
class Check:
    name: str
    ok: bool
    message: str = ""


# ------------------------------------------------------------------------------------------------
# Calling the candidate the way the trainer does: shape the rewards, then the advantages.


def call(hook: str, fn: Callable, *args):
    try:
        return fn(*args)
    except HookError as e:
        if e.kind in ("timeout", "died", "protocol", "jail"):  # the hook process is gone: the checks end
            raise
        if e.kind == "type":  # it answered, but not with what the interface asks for
            raise ContractError(str(e)) from None
        raise CandidateFailure(str(e), e.kind == "memory") from None
    except BaseException as e:  # SystemExit too: a candidate must not end the checks
        raise CandidateFailure(f"{hook} raised {describe(e)}", is_memory_error(e)) from None


def check_tensor(x, hook: str, shapes: list[tuple[int, ...]], probe: str) -> Tensor:
    return contract.check_tensor(x, hook, shapes, f"on probe '{probe}'")


def shaped(algo: Algorithm, batch: RolloutBatch, probe: str) -> RolloutBatch:
    """The batch with the candidate's shaped rewards (unchanged when it does not shape)."""
    if algo.shape_rewards is None:
        return batch
    r = call("shape_rewards", algo.shape_rewards, batch.clone(), copy.deepcopy(algo.config))
    r = check_tensor(r, "shape_rewards", [(batch.num_responses,)], probe)
    return dataclasses.replace(batch, rewards=r.detach().float())


def token_advantages(algo: Algorithm, batch: RolloutBatch, probe: str = "claim") -> Tensor:
    """Token advantages [N, T] (zero outside the mask), after the candidate's reward shaping."""
    b = shaped(algo, batch, probe)
    N, T = b.mask.shape
    a = call("compute_advantages", algo.compute_advantages, b.clone(), copy.deepcopy(algo.config))
    a = check_tensor(a, "compute_advantages", [(N, T), (N,)], probe).detach().float()
    return (a[:, None] if a.dim() == 1 else a).expand(N, T) * b.mask


def seq_advantages(algo: Algorithm, batch: RolloutBatch, probe: str = "claim") -> Tensor:
    """Each response's advantage [N]: the mean of its token advantages over its mask."""
    return (token_advantages(algo, batch, probe) * batch.mask).sum(-1) / batch.mask.sum(-1).clamp_min(1.0)


def policy_loss(algo: Algorithm, logp: Tensor, batch: RolloutBatch, adv: Tensor, probe: str) -> Tensor:
    out = call("compute_policy_loss", algo.compute_policy_loss, logp, batch, adv, copy.deepcopy(algo.config))
    return contract.check_loss(out, f"on probe '{probe}'")[0]


# ------------------------------------------------------------------------------------------------
# Probe batches.


def probe_batches() -> dict[str, RolloutBatch]:
    return {
        "default": make_probe_batch(),
        "shuffled": make_probe_batch(seed=1, shuffle=True),
        "all wrong": make_probe_batch(seed=2, p_correct=0.0),
        "all correct": make_probe_batch(seed=3, p_correct=1.0),
        "group size 1": make_probe_batch(seed=4, group_size=1),
        "group size 2": make_probe_batch(seed=5, group_size=2),
        "one token": make_probe_batch(seed=6, max_len=2, min_len=1, p_truncated=0.0),
    }


def claim_batches() -> dict[str, RolloutBatch]:
    return {"seed 0, G=8": make_probe_batch(seed=0), "seed 1, G=4": make_probe_batch(seed=1, group_size=4),
            "seed 2, G=16": make_probe_batch(seed=2, group_size=16),
            "seed 3, shuffled": make_probe_batch(seed=3, shuffle=True)}


def with_lengths(batch: RolloutBatch, lengths: Tensor, seed: int = 0) -> RolloutBatch:
    """``batch`` with new response lengths; mask and log-probs redrawn from ``seed`` over the full budget,
    so two calls with the same seed agree on every token the two masks share."""
    gen = torch.Generator().manual_seed(seed)
    N, L = batch.num_responses, batch.max_len
    T = int(lengths.max())
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    logp = torch.log(0.05 + 0.95 * torch.rand(N, L, generator=gen))
    ref = (logp + 0.03 * torch.randn(N, L, generator=gen)).clamp_max(0.0)
    ent = 3.0 * torch.rand(N, L, generator=gen)
    return dataclasses.replace(batch, lengths=lengths.clone(), mask=mask, old_logp=logp[:, :T] * mask,
                               ref_logp=ref[:, :T] * mask, entropy=ent[:, :T] * mask)


def groups(batch: RolloutBatch):
    """(group id, row indices) for every group, in id order."""
    for g in torch.unique(batch.group_ids).tolist():
        yield g, (batch.group_ids == g).nonzero().flatten()


def _pos(rows: Tensor, i: int) -> int:
    return int((rows == i).nonzero()[0])


# ------------------------------------------------------------------------------------------------
# Base checks.

SHAPE, DETERMINISM, LAYOUT, LOSS, ERRORS = ("outputs have the right shape and are finite", "deterministic",
                                            "independent of the row order of groups",
                                            "policy loss is a finite scalar with a gradient", "runs without raising")


def _run_hooks(algo: Algorithm, batch: RolloutBatch, probe: str, fail: Callable[[str, str], None]) -> Tensor | None:
    """Run every hook on ``batch`` as the trainer would, recording failures. Returns the token advantages."""
    N, T = batch.mask.shape
    cfg = algo.config
    b = batch.clone()
    if algo.shape_rewards is not None:
        r = check_tensor(call("shape_rewards", algo.shape_rewards, b.clone(), cfg), "shape_rewards", [(N,)], probe)
        r2 = call("shape_rewards", algo.shape_rewards, b.clone(), cfg)
        if not (isinstance(r2, Tensor) and torch.equal(r, r2)):
            fail(DETERMINISM, f"shape_rewards gave different results on two calls with the same batch (probe "
                              f"'{probe}'); it must be a pure function of the batch (no randomness, no state)")
        b = dataclasses.replace(b, rewards=r.detach().float())
    a = call("compute_advantages", algo.compute_advantages, b.clone(), cfg)
    a = check_tensor(a, "compute_advantages", [(N, T), (N,)], probe)
    a2 = call("compute_advantages", algo.compute_advantages, b.clone(), cfg)
    if not (isinstance(a2, Tensor) and torch.equal(a, a2)):
        fail(DETERMINISM, f"compute_advantages gave different results on two calls with the same batch (probe "
                          f"'{probe}'); it must be a pure function of the batch (no randomness, no state)")
    adv = (a.detach().float()[:, None] if a.dim() == 1 else a.detach().float()).expand(N, T) * b.mask
    if algo.compute_policy_loss is not default_policy_loss:
        gen = torch.Generator().manual_seed(0)
        logp = (b.old_logp + 0.1 * torch.randn(N, T, generator=gen) * b.mask).requires_grad_(True)
        loss = policy_loss(algo, logp, b.clone(), adv.clone(), probe)
        loss.backward()
        if logp.grad is None or not torch.isfinite(logp.grad).all():
            fail(LOSS, f"compute_policy_loss's gradient w.r.t. logp is {'missing' if logp.grad is None else 'non-finite'}"
                       f" on probe '{probe}'; compute the loss from `logp` with numerically safe operations")
    return adv


def base_checks(algo: Algorithm) -> list[Check]:
    """The interface checks every candidate must pass. Raises CandidateFailure when it runs out of memory."""
    fails: dict[str, str] = {}

    def fail(name: str, message: str) -> None:
        fails.setdefault(name, message)  # the first failure of each check is the one to fix

    def attempt(fn, *args):
        try:
            return fn(*args)
        except CandidateFailure as e:
            if e.memory:
                raise
            fail(ERRORS, f"{e}; fix the error (on a probe batch of the documented shapes)")
        except ContractError as e:
            fail(LOSS if str(e).startswith("compute_policy_loss") else SHAPE, str(e))
        return None

    for probe, batch in probe_batches().items():
        attempt(_run_hooks, algo, batch, probe, fail)
    # the same batch with its rows permuted must give the same advantages, permuted
    base = make_probe_batch(seed=7)
    perm = torch.randperm(base.num_responses, generator=torch.Generator().manual_seed(7))
    a = attempt(seq_advantages, algo, base, "default")
    a_perm = attempt(seq_advantages, algo, base.select(perm), "permuted rows")
    if a is not None and a_perm is not None and not torch.allclose(a_perm, a[perm], atol=1e-5, rtol=1e-4):
        i = int((a_perm - a[perm]).abs().argmax())
        fail(LAYOUT, f"with the rows permuted (groups not contiguous), row {i} (group "
                     f"{int(base.group_ids[perm][i])}) gets advantage {float(a_perm[i]):.4f} instead of "
                     f"{float(a[perm][i]):.4f}; compute group statistics from batch.group_ids (group_mean, "
                     f"group_std), not by reshaping to [P, G]")
    names = [ERRORS, SHAPE, DETERMINISM, LAYOUT]
    if algo.compute_policy_loss is not default_policy_loss:
        names.append(LOSS)
    return [Check(n, n not in fails, fails.get(n, "")) for n in names]


# ------------------------------------------------------------------------------------------------
# Claims: the property tests behind a proposal's words.

Result = tuple[bool, str]


def correct_above_wrong(algo: Algorithm) -> Result:
    n = 0
    for name, batch in claim_batches().items():
        a = seq_advantages(algo, batch)
        vc, vw = batch.correct & batch.valid, batch.valid & ~batch.correct
        for g, rows in groups(batch):
            c, w = rows[vc[rows]], rows[vw[rows]]
            if c.numel() and w.numel():
                n += 1
                i, j = int(c[a[c].argmin()]), int(w[a[w].argmax()])
                if not a[i] > a[j]:
                    return False, (f"batch '{name}', group {g}: correct response {_pos(rows, i)} has advantage "
                                   f"{float(a[i]):.4f} <= wrong response {_pos(rows, j)}'s {float(a[j]):.4f}")
    return True, f"held in {n} groups"


def invalid_below_valid(algo: Algorithm) -> Result:
    n = 0
    batches = {**claim_batches(), "p_valid=0.5": make_probe_batch(seed=4, p_valid=0.5)}
    for name, batch in batches.items():
        a = seq_advantages(algo, batch)
        for g, rows in groups(batch):
            v, iv = rows[batch.valid[rows]], rows[~batch.valid[rows]]
            if v.numel() and iv.numel():
                n += 1
                i, j = int(iv[a[iv].argmax()]), int(v[a[v].argmin()])
                if not a[i] < a[j]:
                    return False, (f"batch '{name}', group {g}: invalid response {_pos(rows, i)} has advantage "
                                   f"{float(a[i]):.4f} >= valid response {_pos(rows, j)}'s {float(a[j]):.4f}")
    return True, f"held in {n} groups"


def zero_mean_mixed(algo: Algorithm) -> Result:
    n = 0
    for name, batch in claim_batches().items():
        a = seq_advantages(algo, batch)
        for g, rows in groups(batch):
            c = batch.correct[rows]
            if c.any() and not c.all():
                n += 1
                s = float(a[rows].sum())
                if abs(s) > 1e-4 * max(1.0, float(a[rows].abs().sum())):
                    return False, (f"batch '{name}', group {g} (mixed, {int(c.sum())} of {len(rows)} correct): the "
                                   f"advantages sum to {s:.4f}, not 0 ({[round(x, 4) for x in a[rows].tolist()]})")
    return True, f"held in {n} mixed groups"


def _all_fail_batches() -> dict[str, RolloutBatch]:
    return {"all valid, none correct, G=8": make_probe_batch(seed=5, p_correct=0.0, p_valid=1.0),
            "all valid, none correct, G=4": make_probe_batch(seed=6, group_size=4, p_correct=0.0, p_valid=1.0),
            "none correct, some invalid": make_probe_batch(seed=7, p_correct=0.0),
            **claim_batches()}


def all_fail_zero(algo: Algorithm) -> Result:
    n = 0
    for name, batch in _all_fail_batches().items():
        a = seq_advantages(algo, batch)
        for g, rows in groups(batch):
            if not batch.correct[rows].any() and batch.valid[rows].all():
                n += 1
                k = int(a[rows].abs().argmax())
                if abs(float(a[rows][k])) > 1e-5:
                    return False, (f"batch '{name}', group {g} (every response valid, none correct): response {k} has "
                                   f"advantage {float(a[rows][k]):.4f}, not 0")
    return True, f"held in {n} all-fail groups"


def all_fail_push_down(algo: Algorithm) -> Result:
    n = 0
    for name, batch in _all_fail_batches().items():
        a = seq_advantages(algo, batch)
        for g, rows in groups(batch):
            if not batch.correct[rows].any():
                n += 1
                k = int(a[rows].argmax())
                if float(a[rows][k]) > 1e-6:
                    return False, (f"batch '{name}', group {g} (none correct): response {k} has advantage "
                                   f"{float(a[rows][k]):.4f} > 0")
                if float(a[rows].min()) >= -1e-6:
                    return False, (f"batch '{name}', group {g} (none correct): no response has a negative advantage "
                                   f"(all {[round(x, 4) for x in a[rows].tolist()]}), so nothing is pushed down")
    return True, f"held in {n} all-fail groups"


def length_term_correct_only(algo: Algorithm) -> Result:
    n = 0
    for seed, G in ((0, 8), (1, 4), (2, 16)):
        batch = make_probe_batch(seed=seed, group_size=G)
        gen = torch.Generator().manual_seed(100 + seed)
        movable = ~batch.correct & ~batch.truncated  # a truncated response must keep length max_len
        new = torch.randint(2, batch.max_len, (batch.num_responses,), generator=gen)
        lengths = torch.where(movable, new, batch.lengths)
        a = seq_advantages(algo, with_lengths(batch, batch.lengths, seed))
        b = seq_advantages(algo, with_lengths(batch, lengths, seed))
        n += int(movable.sum())
        if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
            i = int((a - b).abs().argmax())
            g = int(batch.group_ids[i])
            kind = "correct" if batch.correct[i] else "wrong"
            return False, (f"seed {seed}, group {g}: changing only the lengths of wrong responses moved {kind} response "
                           f"{_pos((batch.group_ids == g).nonzero().flatten(), i)}'s advantage from {float(a[i]):.4f} "
                           f"to {float(b[i]):.4f}")
    return True, f"held with {n} wrong responses re-lengthened"


def shorter_correct_preferred(algo: Algorithm) -> Result:
    n = 0
    batches = {"seed 0, G=8": make_probe_batch(seed=0), "all correct, G=8": make_probe_batch(seed=1, p_correct=1.0),
               "seed 2, G=16": make_probe_batch(seed=2, group_size=16)}
    for k, (name, batch) in enumerate(batches.items()):
        gen = torch.Generator().manual_seed(200 + k)
        lengths = batch.lengths.clone()
        ok_rows = batch.correct & batch.valid
        for _, rows in groups(batch):
            c = rows[ok_rows[rows]]
            # distinct lengths for the group's correct responses, so every pair is ordered
            lengths[c] = (2 + torch.randperm(batch.max_len - 2, generator=gen))[:c.numel()]
        batch = with_lengths(batch, lengths, k)
        a = seq_advantages(algo, batch)
        for g, rows in groups(batch):
            c = rows[ok_rows[rows]]
            for i in c.tolist():
                for j in c.tolist():
                    if lengths[i] < lengths[j]:
                        n += 1
                        if not a[i] > a[j]:
                            return False, (f"batch '{name}', group {g}: correct response {_pos(rows, i)} (length "
                                           f"{int(lengths[i])}) has advantage {float(a[i]):.4f} <= correct response "
                                           f"{_pos(rows, j)}'s {float(a[j]):.4f} (length {int(lengths[j])})")
    return True, f"held for {n} pairs of correct responses"


def bernoulli_scale(algo: Algorithm) -> Result:
    n = 0
    rates = [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.5]
    for seed, G in ((0, 8), (1, 16), (2, 5)):
        batch = make_probe_batch(seed=seed, group_size=G, p_valid=1.0, p_correct=rates)
        a = seq_advantages(algo, batch)
        for g, rows in groups(batch):
            k = int(batch.correct[rows].sum())
            if 0 < k < len(rows):
                p = k / len(rows)
                want = (1 - p) / (p * (1 - p)) ** 0.5
                for i in rows[batch.correct[rows]].tolist():
                    n += 1
                    if abs(float(a[i]) - want) > 1e-3 * abs(want):
                        return False, (f"G={G}, group {g} ({k} of {len(rows)} correct, p={p:.3f}): correct response "
                                       f"{_pos(rows, i)} has advantage {float(a[i]):.4f}; the Bernoulli scaling "
                                       f"(1-p)/sqrt(p(1-p)) gives {want:.4f}")
    return True, f"held for {n} correct responses"


def rewards_unchanged_for_wrong(algo: Algorithm) -> Result:
    if algo.shape_rewards is None:
        return False, "the claim is about shape_rewards, which the candidate does not define; drop the claim"
    n = 0
    for name, batch in claim_batches().items():
        r = shaped(algo, batch, name).rewards
        for i in (~batch.correct).nonzero().flatten().tolist():
            n += 1
            if abs(float(r[i]) - float(batch.rewards[i])) > 1e-6:
                what = "truncated" if batch.truncated[i] else ("valid" if batch.valid[i] else "invalid")
                return False, (f"batch '{name}': wrong response at row {i} ({what}, length {int(batch.lengths[i])}) "
                               f"got shaped reward {float(r[i]):.4f} instead of its reward {float(batch.rewards[i]):.4f}")
    return True, f"held for {n} wrong responses"


def loss_sign(algo: Algorithm) -> Result:
    batch = make_probe_batch(seed=8)
    N, T = batch.mask.shape
    gen = torch.Generator().manual_seed(8)
    sign = torch.where(torch.rand(N, T, generator=gen) < 0.5, -1.0, 1.0)
    adv = sign * (0.5 + torch.rand(N, T, generator=gen)) * batch.mask
    logp = batch.old_logp.clone().requires_grad_(True)  # ratio 1: the first update, nothing clipped
    policy_loss(algo, logp, batch.clone(), adv, "loss sign").backward()
    g = logp.grad if logp.grad is not None else torch.zeros_like(logp)
    m = batch.mask > 0
    bad = m & (((adv > 0) & ~(g < 0)) | ((adv < 0) & ~(g > 0)))
    if bad.any():
        i, t = (int(x) for x in bad.nonzero()[0])
        return False, (f"token {t} of response {i} has advantage {float(adv[i, t]):+.3f} but d loss/d logp = "
                       f"{float(g[i, t]):+.3g}; raising the log-prob of a token must lower the loss when its advantage "
                       f"is positive and raise it when negative")
    return True, f"held on {int(m.sum())} tokens"


class Claim(NamedTuple):
    description: str
    check: Callable[[Algorithm], Result]


CLAIMS: dict[str, Claim] = {
    "correct_above_wrong": Claim("in every group, each valid-correct response's advantage exceeds each valid-wrong "
                                 "one's", correct_above_wrong),
    "invalid_below_valid": Claim("in groups with both, every invalid response's advantage is below every valid one's",
                                 invalid_below_valid),
    "zero_mean_mixed": Claim("the advantages of a mixed group (some correct, some not) sum to zero", zero_mean_mixed),
    "all_fail_zero": Claim("groups with every response valid and none correct get zero advantage", all_fail_zero),
    "all_fail_push_down": Claim("in groups with no correct response every advantage is <= 0 and some are < 0",
                                all_fail_push_down),
    "length_term_correct_only": Claim("changing the lengths of wrong responses changes no advantage: length enters "
                                      "only through correct responses", length_term_correct_only),
    "shorter_correct_preferred": Claim("of two correct responses in a group, the shorter has the higher advantage",
                                       shorter_correct_preferred),
    "bernoulli_scale": Claim("a correct response in a mixed all-valid group with pass rate p = k/G gets advantage "
                             "(1-p)/sqrt(p(1-p)) (analytic Bernoulli variance), within 0.1%", bernoulli_scale),
    "rewards_unchanged_for_wrong": Claim("shape_rewards leaves the reward of every response that is not correct "
                                         "unchanged", rewards_unchanged_for_wrong),
    "loss_sign": Claim("raising the log-prob of a positive-advantage token lowers the loss (and of a negative-advantage "
                       "token raises it)", loss_sign),
}


def check_claim(algo: Algorithm, name: str) -> Check:
    try:
        ok, message = CLAIMS[name].check(algo)
    except ContractError as e:
        ok, message = False, str(e)
    except CandidateFailure as e:
        if e.memory:
            raise
        ok, message = False, str(e)
    return Check(f"claim: {name}", ok, message if ok else f"claim '{name}' ({CLAIMS[name].description}) failed: "
                                                            f"{message}")


# ------------------------------------------------------------------------------------------------
# Behaviour fingerprint and the sandbox target.


def behaviour(algo: Algorithm) -> str:
    """A short hash of what the algorithm does on a fixed probe batch: its advantages (after shaping, rounded
    to 4 decimals) and its policy loss there, so two sources that behave the same hash the same."""
    batch = make_probe_batch(seed=0)
    adv = token_advantages(algo, batch, "behaviour")
    gen = torch.Generator().manual_seed(0)
    logp = (batch.old_logp + 0.3 * torch.randn(batch.mask.shape, generator=gen) * batch.mask).requires_grad_(True)
    loss = policy_loss(algo, logp, batch.clone(), adv, "behaviour")
    h = hashlib.sha256(torch.round(adv * 1e4).to(torch.int64).numpy().tobytes())
    h.update(f"{float(loss.detach()):.4f}".replace("-0.0000", "0.0000").encode())
    return h.hexdigest()[:12]


def run_checks(algo: Algorithm, claims: list[str], emit: Callable[[dict], None] = lambda m: None) -> dict:
    """Check one loaded candidate (a hook process's algorithm). Returns {stage, errors, checks, behaviour}.
    Raises HookError when the hook process hangs, dies or breaks the protocol."""
    def report(stage: str, checks: list[Check], errors: list[str] | None = None, fingerprint: str = "") -> dict:
        if errors is None:
            errors = [c.message for c in checks if not c.ok]
        return {"stage": stage, "errors": errors, "checks": [dataclasses.asdict(c) for c in checks],
                "behaviour": fingerprint}

    checks = [Check("loads", True)]
    try:
        checks += base_checks(algo)
        emit({"stage": "runtime", "ok": all(c.ok for c in checks)})
        if not all(c.ok for c in checks):
            return report("runtime", checks)
        try:
            fingerprint = behaviour(algo)
        except ContractError:  # a loss that breaks far from ratio 1: no fingerprint
            fingerprint = ""
        except CandidateFailure as e:
            if e.memory:
                raise
            fingerprint = ""
        for claim in claims:
            checks.append(check_claim(algo, claim))
            emit({"claim": claim, "ok": checks[-1].ok})
        return report("passed" if all(c.ok for c in checks) else "property", checks, None, fingerprint)
    except CandidateFailure as e:  # out of memory
        checks.append(Check("fits in memory", False, str(e)))
        return report("memory", checks, [f"{e}; allocate tensors of the batch's size only ([N], [N, T])"])
