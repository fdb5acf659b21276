"""The TOML writer of Gramine manifests: whatever a bundle's file names or a path hold,
Python's tomllib reads back exactly the values written, and no value can add a key."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.hardware import toml

# any text TOML can hold: every code point but lone surrogates
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
KEYS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
SCALARS = st.one_of(TEXT, st.integers(-(2**63), 2**63 - 1), st.booleans())
TABLES = st.dictionaries(KEYS, SCALARS, max_size=4)
VALUES = st.one_of(SCALARS, TABLES, st.lists(st.one_of(TEXT, TABLES), max_size=5))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=6))
def test_every_value_reads_back_exactly(values: dict[str, Any]) -> None:
    entries: list[tuple[str | tuple[str, ...], toml.Value]]
    entries = [(("sgx", key), value) for key, value in values.items()]
    text = toml.dumps(entries, "a header\nwith two lines")
    assert tomllib.loads(text) == {"sgx": values}


@pytest.mark.parametrize(
    "hostile",
    [
        '"\nsgx.debug = true\n#',
        '\\" ]\nsgx.debug = true\n',
        "tab\there\rcarriage\x00nul\x1fus\x7fdel\u2028ls",
        "\\u0022 stays text",
        "caf\u00e9 \u2603 \U0001f600",
        "'''",
        '"""',
    ],
)
def test_a_hostile_string_stays_one_value(hostile: str) -> None:
    entries: list[tuple[str | tuple[str, ...], toml.Value]] = [
        ("sgx.trusted_files", [{"uri": f"file:app/{hostile}", "sha256": "00"}]),
        ("loader.env.X", hostile),
        (("loader", "env", hostile), "v"),
    ]
    document = tomllib.loads(toml.dumps(entries))
    assert document["sgx"] == {"trusted_files": [{"uri": f"file:app/{hostile}", "sha256": "00"}]}
    assert document["loader"]["env"] == {"X": hostile, hostile: "v"}


def test_what_toml_cannot_hold_is_refused() -> None:
    with pytest.raises(toml.TomlError, match="surrogate"):
        toml.dumps([("a", "\ud800")])
    with pytest.raises(toml.TomlError, match="float"):
        toml.dumps([("a", 1.5)])  # type: ignore[list-item]


def test_bare_keys_stay_bare_and_others_are_quoted() -> None:
    assert toml.key("max_threads") == "max_threads"
    assert toml.key("LD_LIBRARY_PATH") == "LD_LIBRARY_PATH"
    assert toml.key("a b") == '"a b"'
    assert toml.value(True) == "true" and toml.value(8) == "8" and toml.value([]) == "[]"
