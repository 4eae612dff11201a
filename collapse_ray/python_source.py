"""Python source as the project reads it: one parse with one contract, for the data extractors,
the tasks' splitting and filtering, and the drift metric's parse rate."""
from __future__ import annotations

import ast
import warnings


def parse(code: str) -> ast.Module | None:
    """The module ``code`` parses to, or None where the parser refuses it for any reason (a
    syntax error, a null byte, nesting too deep). Warnings about the source (SyntaxWarning on an
    invalid escape sequence) are silenced: generated and scraped code is full of them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def parses(code: str) -> bool:
    """Does ``code`` parse as Python? Pass complete source, e.g. signature + body."""
    return parse(code) is not None
