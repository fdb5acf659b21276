"""Hostile JSON nesting is refused, never a crash, whatever the recursion limit."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from typing import Any

import pytest

from confide.jsonsafe import JsonTooDeepError, loads_bounded, nesting_depth


def test_depth_ignores_brackets_inside_strings() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "[[[[{{{"}], "c": "\\"]"}') == 3
    assert nesting_depth(b"[]") == 1
    assert nesting_depth(b'"just a string"') == 0


def test_depth_counts_brackets_before_an_unterminated_string() -> None:
    assert nesting_depth(b'[[{"a": "[[[[') == 3  # the parser stops at that string
    assert nesting_depth(b'[["\\') == 2


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def test_depth_of_random_documents_is_their_nesting() -> None:
    rng = random.Random(6)  # noqa: S311 - a seeded fuzz, no secret
    leaves = ['a"[{', "\\", ']}\\"', 1, None, "", "x\\n\u2603", '\\"]']

    def document(level: int) -> Any:
        pick = rng.random()
        if level > 6 or pick < 0.3:
            return rng.choice(leaves)
        if pick < 0.65:
            return [document(level + 1) for _ in range(rng.randint(0, 3))]
        return {
            rng.choice(["k", "[", '"{', "\\"]) + str(i): document(level + 1)
            for i in range(rng.randint(0, 3))
        }

    for _ in range(3000):
        value = document(0)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        assert nesting_depth(text) == _depth(value), text


@pytest.mark.parametrize("unit", [b'"\\', b'"', b'["\\"[{', b"\\"])
def test_depth_is_linear_on_hostile_strings(unit: bytes) -> None:
    """256 KiB (the attest body limit) of unterminated strings: the earlier expression
    retried at every quote, quadratic (minutes of CPU for '"\\' repeated)."""
    data = b'"' + unit * (256 * 1024 // len(unit))
    started = time.perf_counter()
    nesting_depth(data)
    assert time.perf_counter() - started < 2


def test_bounded_loads() -> None:
    assert loads_bounded(b'{"a": [1, 2]}', 2) == {"a": [1, 2]}
    with pytest.raises(JsonTooDeepError):
        loads_bounded(b'{"a": [[1]]}', 2)


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b"[[[1]]]", True),  # as many opening brackets as the limit: no scan needed
        (b"[[[[1]]]]", False),
        (b'[[["[[[[{{{{"]], {"a": [1]}]', True),  # more brackets than the limit, shallow
        (b'[{"a": [["x"]]}]', False),  # more brackets than the limit, deep
    ],
)
def test_bounded_loads_at_the_limit(data: bytes, ok: bool) -> None:
    if ok:
        assert loads_bounded(data, 3) == json.loads(data)
    else:
        with pytest.raises(JsonTooDeepError):
            loads_bounded(data, 3)


def test_deep_nesting_under_a_raised_recursion_limit_does_not_crash() -> None:
    code = (
        "import sys; sys.setrecursionlimit(1_000_000)\n"
        "from confide.jsonsafe import loads_bounded, JsonTooDeepError\n"
        "try:\n"
        "    loads_bounded(b'[' * 2_000_000, 8)\n"
        "except JsonTooDeepError:\n"
        "    print('refused')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "refused"


def test_importing_the_wallet_module_keeps_the_recursion_limit() -> None:
    code = (
        "import sys; before = sys.getrecursionlimit()\n"
        "import confide.crypto.wallet\n"
        "print(sys.getrecursionlimit() == before)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.stdout.strip() == "True", proc.stderr
