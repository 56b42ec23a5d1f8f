import pytest

from poise.backends.trl.grader import boxed, extract_answer, grade, same_answer


def test_the_last_boxed_answer_counts_with_nested_braces():
    assert boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_answer(r"so \boxed{ 42 }.") == "42"


def test_gsm8k_style_answers_are_read_after_the_last_marker():
    assert extract_answer("3 + 4 = 7\n#### 7\n") == "7"
    assert extract_answer("#### 1\n#### 2") == "2"


@pytest.mark.parametrize("text", ["the answer is 7", r"\boxed{7", r"\boxed{}", "####  \n", ""])
def test_a_missing_or_malformed_answer_is_invalid(text):
    assert extract_answer(text) is None
    assert grade(text, True, "7") == (False, False)


def test_a_response_that_ran_past_the_budget_is_invalid_even_with_an_answer():
    assert grade(r"\boxed{7}", False, "7") == (False, False)
    assert grade(r"\boxed{7}", True, "7") == (True, True)


def test_valid_but_wrong_is_apart_from_invalid():
    assert grade(r"\boxed{8}", True, "7") == (True, False)


@pytest.mark.parametrize("given,ref", [("1,000", "1000"), ("7.0", "7"), (r"\frac{1}{2}", "0.5"), ("1/2", "0.5"),
                                       ("$-3$", "-3"), (r"\text{yes}", "yes"), ("x + 1", "x+1")])
def test_equal_answers_in_other_notations_are_correct(given, ref):
    assert same_answer(given, ref)


@pytest.mark.parametrize("given,ref", [("7", "-7"), ("0.33", "1/3"), ("x+2", "x+1"), ("1/0", "0")])
def test_different_answers_are_not(given, ref):
    assert not same_answer(given, ref)


@pytest.mark.parametrize("given,ref,same", [("2,3", "23", False), ("1,000,000", "1000000", True),
                                            (r"-\frac{1}{2}", "-0.5", True), ("x = 5", "5", True),
                                            ("x == 5", "5", False), ("12,34", "1234", False)])
def test_commas_signs_and_assignments(given, ref, same):
    assert same_answer(given, ref) is same
