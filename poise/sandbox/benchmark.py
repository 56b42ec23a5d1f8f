"""The held-out benchmark suite: six tiers, scored like the paper's six benchmarks.

pass@k tiers (aime24, aime25, amc): n samples per problem at temperature 1; the tier score is pass@k_max
with the unbiased estimator, and pass@1 (the mean over samples) is reported beside it.
greedy tiers (math500, minerva, olympiad): one greedy decode per problem; the score is its accuracy.
Every tier also reports the validity rate and the mean response length. Scores are percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

from poise.evaluation.metrics import OVERALL_WEIGHTS, mean_pass_at_k, overall
from poise.sandbox.model import TinyGPT, generate
from poise.sandbox.noise import stream_id
from poise.sandbox.task import (  # noqa: F401 (re-exported)
    HARD_TIERS,
    STYLES,
    TIERS,
    Tier,
    decode,
    grade,
    hard_pass1,
    held_out_set,
    held_out_split,
    style_of,
)
from poise.sandbox.trainer import build_prompts


@dataclass(frozen=True)
class EvalConfig:
    heldout_size: int = 64  # problems per tier
    heldout_seed: int = 1234
    samples: int = 32  # n for the pass@k tiers
    max_new_tokens: int = 96
    batch_rows: int = 1024  # rows decoded at once (bounds memory: the KV cache of 1,024 rows is ~0.5 GB)
    precision: str = "fp32"
    # "search": the held-out set discovery selects on; "confirm": a second held-out set, disjoint from it,
    # on which the best candidates are re-evaluated (fresh seeds), so a discovery is never scored on
    # the data that selected it
    split: str = "search"


def eval_problems(tier: Tier, cfg: EvalConfig) -> list:
    """The held-out problems of ``tier`` for ``cfg.split``."""
    return held_out_split(tier, cfg.heldout_size, cfg.heldout_seed, cfg.split)


def _decode_all(model: TinyGPT, problems, n: int, greedy: bool, cfg: EvalConfig, stream: int):
    """[(valid, correct, length, finished, style, has_answer)] for n responses per problem, in batches of
    at most batch_rows rows. Sample j of problem p draws the noise of row p * n + j of ``stream``, whatever
    the batching."""
    out = []
    per = max(1, cfg.batch_rows // n)
    for i in range(0, len(problems), per):
        chunk = problems[i:i + per]
        s = generate(model, build_prompts(chunk, n), cfg.max_new_tokens, 1.0, greedy=greedy, stream=stream,
                     row_offset=i * n, precision=cfg.precision)
        tokens, finished, lengths = s.tokens.cpu(), s.finished.cpu(), s.lengths.cpu()
        for r in range(tokens.shape[0]):
            text, fin = decode(tokens[r]), bool(finished[r])
            v, c = grade(text, fin, chunk[r // n])
            out.append((v, c, int(lengths[r]), fin, style_of(text), ">" in text))
    return out


def eval_stream(seed: int, tier: str) -> int:
    """The sampling noise of ``tier`` at evaluation seed ``seed``: the same for every policy scored at that seed
    (common random numbers), so two arms at one seed differ by their policies, not by their draws."""
    return stream_id("eval", seed, tier)


def evaluate_tier(model: TinyGPT, tier: Tier, cfg: EvalConfig, seed: int) -> dict:
    problems = eval_problems(tier, cfg)
    greedy = tier.metric == "greedy"
    n = 1 if greedy else cfg.samples
    res = _decode_all(model, problems, n, greedy, cfg, eval_stream(seed, tier.name))
    counts = [(n, sum(res[p * n + j][1] for j in range(n))) for p in range(len(problems))]
    row = {
        "metric": "greedy" if greedy else f"pass@{n}",
        "pass@1": 100 * mean_pass_at_k(counts, 1),
        "validity": 100 * sum(r[0] for r in res) / len(res),
        "length": sum(r[2] for r in res) / len(res),
        "problems": len(problems),
        "samples": n,
        # why responses are invalid: they ran past the token budget, or ended without a final answer
        "truncated": 100 * sum(not r[3] for r in res) / len(res),
        "no_answer": 100 * sum(r[3] and not r[5] for r in res) / len(res),
        # share and accuracy of each scratchpad style: what a longer or shorter response buys on this tier
        "styles": {st: {"share": 100 * len(rs) / len(res), "accuracy": 100 * sum(r[1] for r in rs) / len(rs)}
                   for st in STYLES if (rs := [r for r in res if r[4] == st])},
    }
    # mean length of right and of wrong answers (when there are any): a loss normalised per response lets wrong
    # answers grow longer while the mean length hides it
    for name, want in (("length_correct", True), ("length_wrong", False)):
        if ls := [r[2] for r in res if r[1] == want]:
            row[name] = sum(ls) / len(ls)
    if not greedy:
        for k in (2, 4, 8, 16, 32, 64):
            if k <= n:
                row[f"pass@{k}"] = 100 * mean_pass_at_k(counts, k)
    row["score"] = row["pass@1"] if greedy else row[f"pass@{n}"]
    return row


def evaluate_policy(model: TinyGPT, cfg: EvalConfig, seed: int = 0) -> dict:
    """Held-out results: {"tiers": {name: row}, "overall": float, "length": float, "validity": float}."""
    tiers = {t.name: evaluate_tier(model, t, cfg, seed) for t in TIERS}
    return {
        "tiers": tiers,
        "overall": overall({k: v["score"] for k, v in tiers.items()}),
        "length": sum(v["length"] for v in tiers.values()) / len(tiers),
        "validity": sum(v["validity"] for v in tiers.values()) / len(tiers),
        "weights": OVERALL_WEIGHTS,
    }
