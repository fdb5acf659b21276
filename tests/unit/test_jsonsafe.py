"""Hostile JSON nesting is refused, never a crash, whatever the recursion limit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from confide.jsonsafe import JsonTooDeepError, loads_bounded, nesting_depth


def test_depth_ignores_brackets_inside_strings() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "[[[[{{{"}], "c": "\\"]"}') == 3
    assert nesting_depth(b"[]") == 1
    assert nesting_depth(b'"just a string"') == 0


def test_bounded_loads() -> None:
    assert loads_bounded(b'{"a": [1, 2]}', 2) == {"a": [1, 2]}
    with pytest.raises(JsonTooDeepError):
        loads_bounded(b'{"a": [[1]]}', 2)


def test_deep_nesting_under_a_raised_recursion_limit_does_not_crash() -> None:
    code = (
        "import sys; sys.setrecursionlimit(1_000_000)\n"
        "from confide.jsonsafe import loads_bounded, JsonTooDeepError\n"
        "try:\n"
        "    loads_bounded(b'[' * 2_000_000, 8)\n"
        "except JsonTooDeepError:\n"
        "    print('refused')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "refused"


def test_importing_the_wallet_module_keeps_the_recursion_limit() -> None:
    code = (
        "import sys; before = sys.getrecursionlimit()\n"
        "import confide.crypto.wallet\n"
        "print(sys.getrecursionlimit() == before)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == "True", proc.stderr
