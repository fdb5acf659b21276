"""JSON from untrusted sources, with its nesting bounded before it is parsed.

Python's JSON parser recurses once per nesting level. Its recursion limit normally turns
hostile nesting into a RecursionError, but any library in the process may raise that
limit (py_ecc, pulled in by eth-account, sets it to 100,000), and then a few hundred
kilobytes of ``[`` overflow the C stack and kill the process. So untrusted JSON is
checked for depth first, without recursion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class JsonTooDeepError(ValueError):
    """The document nests deeper than allowed."""


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` outside strings."""
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(
    data: bytes,
    max_depth: int,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """``json.loads`` after checking that ``data`` nests at most ``max_depth`` levels.

    The bytes must be UTF-8 (as RFC 8259 requires between systems): ``json.loads`` would
    otherwise guess UTF-16 or UTF-32, whose brackets the depth check cannot see.
    """
    text = data.decode("utf-8")  # UnicodeDecodeError (a ValueError) for anything else
    if nesting_depth(text.encode()) > max_depth:
        raise JsonTooDeepError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text, object_pairs_hook=object_pairs_hook)
