"""Structured answers out of free text."""

import pytest

from poise.agents.parse import ParseError, extract_code, extract_json

CODE = "import torch\n\ndef compute_advantages(batch, cfg):\n    return batch.rewards\n"


def test_code_from_a_fenced_block_among_prose():
    text = f"Sure! Here it is:\n```python\n{CODE}```\nThis implements the idea."
    assert extract_code(text) == CODE


def test_the_block_that_defines_the_hook_wins_and_unclosed_fences_count():
    text = f"```python\nimport torch\n```\nand\n```py\n{CODE}"  # cut off by max_tokens: no closing fence
    assert extract_code(text) == CODE


def test_bare_code_is_accepted_when_it_parses():
    assert extract_code(CODE) == CODE


def test_code_errors_tell_the_model_what_to_do():
    with pytest.raises(ParseError, match="no ```python code block"):
        extract_code("I think you should scale the advantages.")
    with pytest.raises(ParseError, match="does not define `compute_advantages"):
        extract_code("```python\ndef f(x):\n    return x\n```")


def test_json_fenced_bare_and_lenient():
    assert extract_json('```json\n{"a": 1}\n```', dict) == {"a": 1}
    assert extract_json('The verdict: {"verdict": "match", "reasons": [],} ok', dict) == {"verdict": "match",
                                                                                          "reasons": []}
    assert extract_json("[{'name': 'X', 'ok': True}]", list) == [{"name": "X", "ok": True}]
    assert extract_json('{"proposals": [{"name": "A"}]}', list) == [{"name": "A"}]
    assert extract_json('{"name": "A"}', list) == [{"name": "A"}]  # one proposal without the list


def test_json_errors_say_what_was_expected():
    with pytest.raises(ParseError, match=r"no JSON an object \{\.\.\.\} found"):
        extract_json("no json here", dict)
    with pytest.raises(ParseError, match="no valid JSON"):
        extract_json("```json\n{name: ???}\n```", dict)
