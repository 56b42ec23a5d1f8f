"""Tiny-math: procedurally generated arithmetic chains with verifiable answers.

A problem is a chain of additions and subtractions of numbers 1..19, ``"14+17-9+3="``; the answer is its
value (running totals never go below zero). A response is a scratchpad of steps, each ending in ``;``,
then ``>`` and the answer:

    verbose  "14+17=31;31-9=22;22+3=25;>25"     every step written out
    concise  "31;22;25;>25"                     running totals only: the arithmetic is done "in the head"
    direct   ">25"                              no scratchpad (the teacher does this only for short chains)

The three conditions of real math RL that the paper's mechanisms answer are built in, each by a
mechanism a real model has (docs/benchmarks.md measures them at the warm start):

- sparse rewards on the hard problems: the warm start learnt from a careless teacher (each step off by
  1-3 with probability ``SFTConfig.slip``), so its samples slip now and then and long chains mostly fail
  at temperature 1, while its most likely step is usually right (greedy decoding does better);
- responses that are well-formed or not: the teacher sometimes stops without stating the answer
  (``SFTConfig.no_answer``: the boxed answer a real model forgets), and it wrote its long scratchpads in
  full, so on the longest chains the warm start's verbose scratchpads run past the generation budget;
  both are *invalid*, a signal separate from correctness;
- a length trade-off: two-digit arithmetic done in the head (concise, direct) goes wrong more often
  than written out (verbose). (The design aims for this to matter little on short chains and a lot on
  long ones; at this warm start the written-out style is clearly more accurate at every length.)

Six tiers of difficulty play the roles of the paper's benchmarks. The three hardest are scored by
pass@k at temperature 1 (AIME24, AIME25, AMC in the paper), the three easier ones by greedy accuracy
(MATH-500, Minerva, OlympiadBench). Held-out problems are drawn only from prompts reserved for evaluation
(``reserved``), which training never sees.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

# Strict grammar of a response (without the end token). A step is "a+b=c;" or "c;".
RESPONSE_RE = re.compile(r"(?:(?:\d{1,3}[+-]\d{1,3}=)?\d{1,3};)*>(\d{1,3})")
STYLES = ("verbose", "concise", "direct")


@dataclass(frozen=True)
class Problem:
    prompt: str  # "14+7-9+3="
    answer: int
    operands: tuple[int, ...]
    ops: tuple[str, ...]  # len(operands) - 1 signs

    @property
    def num_steps(self) -> int:
        return len(self.ops)


@dataclass(frozen=True)
class Tier:
    """A difficulty level of the benchmark suite."""

    name: str
    min_terms: int
    max_terms: int
    max_operand: int
    p_sub: float  # probability that a step subtracts (when the running total allows it)
    metric: str  # "pass@k" (sampled at temperature 1) or "greedy"
    weight: float  # weight in Overall, as in the paper


# The paper's suite and weights: AIME24 .20, AIME25 .20, AMC .15, MATH-500 .15, Minerva .15, OlympiadBench .15.
TIERS: tuple[Tier, ...] = (
    Tier("aime24", 12, 13, 19, 0.4, "pass@k", 0.20),
    Tier("aime25", 12, 13, 19, 0.5, "pass@k", 0.20),
    Tier("amc", 11, 12, 19, 0.4, "pass@k", 0.15),
    Tier("math500", 3, 4, 19, 0.4, "greedy", 0.15),
    Tier("minerva", 5, 7, 19, 0.4, "greedy", 0.15),
    Tier("olympiad", 7, 9, 19, 0.4, "greedy", 0.15),
)
HARD_TIERS = tuple(t.name for t in TIERS if t.metric == "pass@k")  # the sparse-reward tiers


def hard_pass1(metrics: dict) -> float:
    """Mean pass@1 (temperature 1) over the pass@k tiers of a held-out result: the sparse-reward signal
    itself, which moves even where pass@32 is near its ceiling."""
    return sum(metrics["tiers"][t]["pass@1"] for t in HARD_TIERS) / len(HARD_TIERS)


TIER_BY_NAME = {t.name: t for t in TIERS}


def make_problem(rng: random.Random, num_terms: int, max_operand: int, p_sub: float) -> Problem:
    operands = [rng.randint(1, max_operand)]
    ops: list[str] = []
    total = operands[0]
    for _ in range(num_terms - 1):
        x = rng.randint(1, max_operand)
        if total >= x and rng.random() < p_sub:
            ops.append("-")
            total -= x
        else:
            ops.append("+")
            total += x
        operands.append(x)
    prompt = str(operands[0]) + "".join(o + str(x) for o, x in zip(ops, operands[1:])) + "="
    return Problem(prompt, total, tuple(operands), tuple(ops))


def tier_problem(rng: random.Random, tier: Tier) -> Problem:
    return make_problem(rng, rng.randint(tier.min_terms, tier.max_terms), tier.max_operand, tier.p_sub)


def solution(problem: Problem, style: str, rng: random.Random | None = None, slip: float = 0.0,
             answer: bool = True) -> str:
    """A scratchpad in one of the three styles. With ``slip`` > 0 each step's result is off by 1-3 with
    that probability and the chain carries on from the wrong value: a careless teacher. SFT on such data
    gives a policy whose most likely step is right but whose samples slip now and then, so long chains
    fail under sampling: errors that RL can remove, as it sharpens a pretrained model."""
    def step(value: int) -> int:
        if rng is not None and slip > 0 and rng.random() < slip:
            return max(0, value + rng.choice((-3, -2, -1, 1, 2, 3)))
        return value

    total = problem.operands[0]
    steps = []
    for op, x in zip(problem.ops, problem.operands[1:]):
        new = step(total + x if op == "+" else max(0, total - x))
        if style == "verbose":
            steps.append(f"{total}{op}{x}={new};")
        elif style == "concise":
            steps.append(f"{new};")
        total = new
    if style == "direct":
        return f">{total}"
    # without ``answer`` the scratchpad just stops: the final answer is never stated, as when a model ends
    # its reasoning without the boxed answer the grader looks for
    return "".join(steps) + (f">{total}" if answer else "")


def grade(response: str, finished: bool, problem: Problem) -> tuple[bool, bool]:
    """(valid, correct) of a decoded response. ``finished`` is False when it hit the token budget.
    Valid means it parses under the strict grammar and ended on its own; correct implies valid."""
    if not finished:
        return False, False
    m = RESPONSE_RE.fullmatch(response)
    if m is None:
        return False, False
    return True, int(m.group(1)) == problem.answer


def style_of(response: str) -> str:
    """Which scratchpad style a response is written in: "direct" (answer only), "verbose" (its first step
    writes the operation out) or "concise" (running totals). Malformed responses are classified by their
    first step all the same, so every sample counts toward its style's share."""
    if response.startswith(">"):
        return "direct"
    head = response.split(";", 1)[0]
    return "verbose" if ("+" in head or "-" in head or "=" in head) else "concise"


# One prompt in HELD_OUT_SHARE, chosen by a hash of its text, is reserved for evaluation: held-out sets
# draw only reserved prompts, and neither the warm start nor RL ever trains on one. So no held-out set,
# of any tier, size or seed, can overlap training data, and the warm start does not depend on them.
HELD_OUT_SHARE = 8


def reserved(prompt: str) -> bool:
    return int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=4).digest(), "big") % HELD_OUT_SHARE == 0


# Greedy tiers cost one decode per problem where a pass@k tier costs k: they get this many times more
# held-out problems, which buys power cheaply (their score is a proportion over problems).
GREEDY_SCALE = 4


def held_out_size(tier: Tier, size: int) -> int:
    """Problems per held-out split of ``tier`` for a fidelity's ``heldout_size``."""
    return size * GREEDY_SCALE if tier.metric == "greedy" else size


def held_out_set(tier: Tier, size: int, seed: int = 1234, exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """A fixed held-out set for a tier: the same (tier, size, seed, exclude) always gives the same problems.
    ``exclude`` keeps a second set (the confirmation set) disjoint from the first."""
    rng = random.Random(f"heldout/{tier.name}/{seed}")
    seen: set[str] = set(exclude)
    out: list[Problem] = []
    tries = 0
    while len(out) < size:
        p = tier_problem(rng, tier)
        tries += 1
        if p.prompt not in seen and reserved(p.prompt):  # distinct problems, so pass@k is not over-counted
            seen.add(p.prompt)
            out.append(p)
        elif tries > 2000 * size:
            raise ValueError(f"tier {tier.name} has too few distinct problems for a held-out set of {size}; "
                             f"lower the held-out size or widen the tier")
    return out


def held_out_split(tier: Tier, size: int, seed: int, split: str) -> list[Problem]:
    """The problems of one held-out split: "search" (what discovery selects on) or "confirm" (a second
    set, disjoint from it, on which the best candidates are re-evaluated)."""
    n = held_out_size(tier, size)
    search = held_out_set(tier, n, seed)
    if split == "search":
        return search
    if split == "confirm":
        return held_out_set(tier, n, seed + 1, frozenset(p.prompt for p in search))
    raise ValueError(f"unknown held-out split {split!r}; use 'search' or 'confirm'")


def held_out_prompts(size: int, seed: int) -> set[str]:
    """Every held-out prompt of both splits of every tier: neither the warm start nor RL trains on one."""
    return {p.prompt for t in TIERS for split in ("search", "confirm") for p in held_out_split(t, size, seed, split)}


# The RL training set: chains of 2-10 numbers, uniformly. Like a curated math RL set it holds problems a
# model solves now and then, with a share (about a third of GRPO's first groups) it never solves; the
# hard tiers' 11-13-term chains are longer than any training problem, as AIME is harder than most of a
# training set, so they measure what RL generalises rather than what it memorised.
TRAIN_TERMS = (2, 10)
TRAIN_MAX_OPERAND = 19
TRAIN_P_SUB = 0.4


def draw_problems(rng: random.Random, n: int, terms: tuple[int, int], max_operand: int, p_sub: float,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[Problem]:
    """``n`` training problems with chain lengths uniform over ``terms``, never a reserved (held-out) prompt."""
    out: list[Problem] = []
    while len(out) < n:
        p = make_problem(rng, rng.randint(*terms), max_operand, p_sub)
        if p.prompt not in exclude and not reserved(p.prompt):
            out.append(p)
    return out


def training_problems(rng: random.Random, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[Problem]:
    """``n`` RL training problems (chain lengths uniform over TRAIN_TERMS)."""
    return draw_problems(rng, n, TRAIN_TERMS, TRAIN_MAX_OPERAND, TRAIN_P_SUB, exclude)


# ----------------------------------------------------------------------------------------------
# Character tokenizer. Tiny vocabulary: no BPE, so one token is one character and lengths are exact.

PAD, BOS, EOS = 0, 1, 2
CHARS = "0123456789+-=;>"
VOCAB = ["<pad>", "<bos>", "<eos>", *CHARS]
_STOI = {c: i + 3 for i, c in enumerate(CHARS)}


def encode(text: str) -> list[int]:
    try:
        return [_STOI[c] for c in text]
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the tiny-math vocabulary {CHARS!r}") from None


def decode(ids) -> str:
    """Characters up to (not including) the first end token; pads and BOS are dropped."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i >= 3:
            out.append(CHARS[i - 3])
    return "".join(out)
