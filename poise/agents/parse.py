"""Reading structured answers out of free text: code blocks and JSON, as LLMs actually write them.

Models wrap answers in prose, in fences with or without a language tag, in unclosed fences, with
trailing commas or comments in JSON. These functions find the intended part or raise `ParseError`
with a message written *to the model*: the loop sends it back once, so it says what was wrong and
what shape to answer in.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


class ParseError(ValueError):
    pass


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of every ``` block, an unclosed last block included (answers cut by max_tokens)."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def extract_code(text: str, required: str = "compute_advantages") -> str:
    """The Python module in an answer: the fenced block that defines ``required`` (the longest if several),
    else the whole answer if it parses as Python and defines it."""
    candidates = [body for lang, body in fenced_blocks(text) if lang in ("", "python", "py", "python3")]
    defining = [c for c in candidates if re.search(rf"^\s*def\s+{re.escape(required)}\s*\(", c, re.M)]
    if defining:
        return max(defining, key=len).strip() + "\n"
    if re.search(rf"^def\s+{re.escape(required)}\s*\(", text, re.M):
        try:
            ast.parse(text)
            return text.strip() + "\n"
        except SyntaxError:
            pass
    if candidates:
        raise ParseError(f"the code block does not define `{required}(batch, cfg)`; answer with one ```python "
                         f"block holding the whole module, including `def {required}(batch, cfg):`")
    raise ParseError("no ```python code block found; answer with exactly one ```python block holding the whole "
                     f"module (imports, CONFIG if any, and `def {required}(batch, cfg):`)")


def _json_candidates(text: str) -> list[str]:
    out = [body for lang, body in fenced_blocks(text) if lang in ("json", "", "javascript", "js")]
    # the outermost {...} or [...] span of the answer, for JSON written without a fence
    for open_, close in (("[", "]"), ("{", "}")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            out.append(text[i:j + 1])
    return out


def _loads_lenient(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    # the common slips: // comments, trailing commas, Python literals (True/None, single quotes)
    t = re.sub(r"^\s*//.*$", "", s, flags=re.M)
    t = re.sub(r",\s*([}\]])", r"\1", t)
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ParseError("the answer holds no valid JSON") from None


def extract_json(text: str, expect: type | tuple[type, ...] = (dict, list)) -> Any:
    """The first JSON value of type ``expect`` in an answer (fenced or bare)."""
    errors = []
    for cand in _json_candidates(text):
        try:
            value = _loads_lenient(cand.strip())
        except ParseError as e:
            errors.append(str(e))
            continue
        if isinstance(value, expect):
            return value
        if isinstance(expect, type) and expect is list and isinstance(value, dict):
            # {"proposals": [...]} for a list
            lists = [v for v in value.values() if isinstance(v, list)]
            if len(lists) == 1:
                return lists[0]
            return [value]
        errors.append(f"found JSON of type {type(value).__name__}")
    names = expect.__name__ if isinstance(expect, type) else " or ".join(t.__name__ for t in expect)
    what = "an object {...}" if expect is dict else "a list [...]" if expect is list else names
    detail = f" ({errors[0]})" if errors else ""
    raise ParseError(f"no JSON {what} found in the answer{detail}; answer with one ```json block holding {what}")
