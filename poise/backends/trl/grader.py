"""The math grader: format validity apart from correctness, as real math RL needs them.

A response is **valid** when it finished within the token budget (it ended with the end-of-sequence
token) and states an extractable final answer: the last ``\\boxed{...}`` (braces nested), or else the text
after the last ``####``. It is **correct** when it is valid and that answer equals the reference, as
numbers when both read as numbers (``1,000`` = ``1000.0``, ``\\frac{1}{2}`` = ``0.5``, ``x = 5`` = ``5``; a comma
only as a thousands separator, so ``2,3`` is not ``23``), else as normalised text (spaces, ``$``,
``\\left``/``\\right`` and a trailing period dropped).
"""

from __future__ import annotations

import re
from fractions import Fraction


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if there is none
    or it never closes."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def extract_answer(text: str) -> str | None:
    """The stated final answer, or None (a malformed or missing one)."""
    b = boxed(text)
    if b is not None:
        return b.strip() or None
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().splitlines()
        return tail[0].strip() if tail and tail[0].strip() else None
    return None


_FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d*)?$")
_ASSIGN = re.compile(r"^[a-zA-Z]\w*=(?!=)")  # "x=5": the value after a variable's name


def _normalise(s: str) -> str:
    s = s.strip().strip("$").replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def _number(s: str) -> Fraction | None:
    s = _ASSIGN.sub("", _normalise(s))
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    m = _FRAC.match(s)
    try:
        if m:
            value = Fraction(m.group(2)) / Fraction(m.group(3))
            return -value if m.group(1) else value
        if "/" in s:
            a, b = s.split("/", 1)
            return Fraction(a) / Fraction(b)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(given: str, reference: str) -> bool:
    a, b = _number(given), _number(reference)
    if a is not None and b is not None:
        return a == b
    return _normalise(given) == _normalise(reference)


def grade(text: str, finished: bool, reference: str) -> tuple[bool, bool]:
    """(valid, correct) of one response; ``finished``: it ended with the end token within the budget."""
    answer = extract_answer(text) if finished else None
    if answer is None:
        return False, False
    return True, same_answer(answer, reference)
