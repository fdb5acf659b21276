"""JSON from untrusted sources, with its nesting bounded before it is parsed.

Python's JSON parser recurses once per nesting level. Its recursion limit normally turns
hostile nesting into a RecursionError, but any library in the process may raise that
limit (py_ecc, which eth-account imports, sets it to 100,000), and then a few hundred
kilobytes of ``[`` overflow the C stack and kill the process. So untrusted JSON is
checked for depth first, without recursion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

# A JSON string: a quote, runs of plain bytes between escapes, then its closing quote, or
# the end of the data when there is none. Matching always succeeds at the opening quote,
# without backtracking, so removing the strings is linear in the data. (The earlier
# "(?:[^"\\]|\\.)*" failed at each opening quote of an unterminated string and was
# retried at the next: quadratic, minutes of CPU for 256 KiB of '"\\' repeated.) Ending an
# unterminated string at the end of the data hides no bracket that the parser would
# reach: it stops at that string with an error. DOTALL: a backslash escapes any byte.
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = tuple(1 if c in b"[{" else -1 if c in b"]}" else 0 for c in range(256))


class JsonTooDeepError(ValueError):
    """The document nests deeper than allowed."""


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` outside strings."""
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    # The running depth, summed in C (a Python loop took ~90 ms for 256 KiB of brackets:
    # a cost anyone could make a server pay before any check of who is asking).
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


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
    # No deeper than its opening brackets, strings' included: most documents are
    # cleared by that count without the scan.
    opening = data.count(b"[") + data.count(b"{")
    if opening > max_depth and nesting_depth(data) > max_depth:
        raise JsonTooDeepError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text, object_pairs_hook=object_pairs_hook)
