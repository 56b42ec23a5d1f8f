import random

import pytest

from poise.sandbox.task import (EOS, STYLES, TIERS, Tier, decode, encode, grade, held_out_set, make_problem,
                                solution, training_problems)


def _value(prompt: str) -> int:
    return eval(prompt.rstrip("="))  # the prompt is plain integer arithmetic


@pytest.mark.parametrize("tier", TIERS, ids=lambda t: t.name)
def test_tier_problems_have_the_stated_shape_and_correct_answers(tier):
    for p in held_out_set(tier, 50):
        assert tier.min_terms <= len(p.operands) <= tier.max_terms
        assert all(1 <= x <= tier.max_operand for x in p.operands)
        assert p.answer == _value(p.prompt) >= 0


def test_running_totals_never_go_negative():
    rng = random.Random(0)
    for _ in range(500):
        p = make_problem(rng, 10, 9, 0.9)
        total = p.operands[0]
        for op, x in zip(p.ops, p.operands[1:]):
            total = total + x if op == "+" else total - x
            assert total >= 0


@pytest.mark.parametrize("style", STYLES)
def test_reference_solutions_grade_valid_and_correct(style):
    rng = random.Random(1)
    for _ in range(100):
        p = make_problem(rng, rng.randint(2, 10), 9, 0.4)
        assert grade(solution(p, style), True, p) == (True, True)


def test_grading_separates_validity_from_correctness():
    p = make_problem(random.Random(2), 4, 9, 0.4)
    good = solution(p, "concise")
    wrong = good[: good.rindex(">") + 1] + str(p.answer + 1)
    assert grade(wrong, True, p) == (True, False)  # well-formed, wrong answer
    assert grade(good, False, p) == (False, False)  # ran out of budget: invalid even if the text parses
    for bad in ["", str(p.answer), good + ";", ">" + str(p.answer) + ">1", "1+2=3" + ">" + str(p.answer), good.replace(">", "")]:
        assert grade(bad, True, p)[0] is False, bad


def test_verbose_is_longer_than_concise_is_longer_than_direct():
    p = make_problem(random.Random(3), 6, 9, 0.4)
    assert len(solution(p, "verbose")) > len(solution(p, "concise")) > len(solution(p, "direct"))


def test_held_out_sets_are_fixed_distinct_and_tier_specific():
    a, b = held_out_set(TIERS[0], 64), held_out_set(TIERS[0], 64)
    assert a == b
    assert len({p.prompt for p in a}) == 64
    assert held_out_set(TIERS[0], 64, seed=99) != a
    assert {p.prompt for p in held_out_set(TIERS[1], 64)} != {p.prompt for p in a}


def test_training_data_never_includes_a_held_out_prompt():
    from poise.sandbox.sft import SFTConfig, sft_batch
    from poise.sandbox.task import HELD_OUT_SHARE, held_out_prompts, make_problem, reserved

    held = held_out_prompts(16, 1234)  # both splits of every tier
    assert held and all(reserved(p) for p in held)
    train = training_problems(random.Random(0), 3000)
    assert not any(reserved(p.prompt) for p in train) and not held & {p.prompt for p in train}
    # the training set spans TRAIN_TERMS and stops short of the hard tiers' chains
    from poise.sandbox.task import HARD_TIERS, TIER_BY_NAME, TRAIN_TERMS
    assert {len(p.operands) for p in train} == set(range(TRAIN_TERMS[0], TRAIN_TERMS[1] + 1))
    assert all(TIER_BY_NAME[t].max_terms > TRAIN_TERMS[1] for t in HARD_TIERS)
    prompts, _, _ = sft_batch(random.Random(0), SFTConfig(), set(), 512)
    assert prompts.shape[0] == 512 and not any(reserved(decode(row)) for row in prompts)
    # the rule does something: about one prompt in HELD_OUT_SHARE is reserved
    rng = random.Random(1)
    drawn = [make_problem(rng, 3, 19, 0.4).prompt for _ in range(4000)]
    share = sum(map(reserved, drawn)) / len(drawn)
    assert 0.5 / HELD_OUT_SHARE < share < 1.5 / HELD_OUT_SHARE


def test_a_tier_too_small_for_its_held_out_set_is_a_clear_error():
    tiny = Tier("tiny", 2, 2, 2, 0.0, "greedy", 0.0)  # only "1+1=", "1+2=", ... : 4 distinct prompts
    with pytest.raises(ValueError, match="too few distinct problems"):
        held_out_set(tiny, 50)


def test_tokenizer_round_trip_and_clear_error():
    s = "12+7=19;>19"
    assert decode(encode(s)) == s
    assert decode(encode(s) + [EOS] + encode("99")) == s
    with pytest.raises(ValueError, match="not in the tiny-math vocabulary"):
        encode("1*2")
