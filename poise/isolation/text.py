"""Candidate text (exception messages, a hook's stderr, names an LLM chose) on its way to people."""

import unicodedata


def printable(text: str) -> str:
    """``text`` without control characters (but newlines and tabs): it reaches terminals, logs and the
    archive, and an escape sequence in it could rewrite a user's terminal."""
    return "".join(c if c in "\n\t" or unicodedata.category(c)[0] != "C" else "?" for c in text)


def in_docstring(text: str) -> str:
    """``text`` as it may sit inside a triple-quoted docstring of generated code and read back unchanged:
    a backslash or three double quotes in a name or a proposal could otherwise end the string and inject
    code."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
