"""Tiny-math: procedurally generated arithmetic chains with verifiable answers.

A problem is a chain of additions and subtractions, ``"14+7-9+3="``; the answer is its value (running
totals never go below zero). A response is a scratchpad of steps, each ending in ``;``, then ``>`` and
the answer:

    verbose  "14+7=21;21-9=12;12+3=15;>15"     every step written out
    concise  "21;12;15;>15"                    running totals only
    direct   ">15"                             no scratchpad

The SFT data mixes the three styles, so the policy can trade length for accuracy and a length-shaping
algorithm has something to shape. The format is strict, so that *validity* (the response parses and
ended before the budget) and *correctness* (the answer is right) are separate signals, as the paper's
validity masking needs.

Six tiers of difficulty play the roles of the paper's benchmarks. The three hardest are scored by
pass@k at temperature 1 (AIME24, AIME25, AMC in the paper), the three easier ones by greedy accuracy
(MATH-500, Minerva, OlympiadBench). Each tier has a fixed held-out set drawn from its own seed, and
training prompts that collide with a held-out prompt are skipped.
"""

from __future__ import annotations

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
    Tier("aime24", 9, 11, 9, 0.3, "pass@k", 0.20),
    Tier("aime25", 10, 12, 9, 0.5, "pass@k", 0.20),
    Tier("amc", 6, 8, 9, 0.4, "pass@k", 0.15),
    Tier("math500", 2, 3, 9, 0.3, "greedy", 0.15),
    Tier("minerva", 3, 5, 9, 0.4, "greedy", 0.15),
    Tier("olympiad", 5, 7, 9, 0.4, "greedy", 0.15),
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


def held_out_set(tier: Tier, size: int, seed: int = 1234, exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """A fixed held-out set for a tier: the same (tier, size, seed, exclude) always gives the same problems.
    ``exclude`` keeps a second set (the confirmation set) disjoint from the first."""
    rng = random.Random(f"heldout/{tier.name}/{seed}")
    seen: set[str] = set(exclude)
    out: list[Problem] = []
    while len(out) < size:
        p = tier_problem(rng, tier)
        if p.prompt not in seen:  # distinct problems, so pass@k is not over-counted
            seen.add(p.prompt)
            out.append(p)
    return out


def training_problems(rng: random.Random, n: int, tiers: tuple[Tier, ...], exclude: set[str]) -> list[Problem]:
    """``n`` training problems drawn uniformly over ``tiers``, never one of the held-out prompts."""
    out: list[Problem] = []
    while len(out) < n:
        p = tier_problem(rng, tiers[rng.randrange(len(tiers))])
        if p.prompt not in exclude:
            out.append(p)
    return out


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
