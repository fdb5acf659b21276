"""Properties of the session parser, searched with hypothesis: whatever a wallet sends
(random text, random YAML structures, a valid document mutated), the answer is a parsed
session or a ``SessionError`` naming the line, in bounded time, never another exception
(which the sms would answer with a 500 and a traceback)."""

from __future__ import annotations

import re
import time
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.errors import SessionError
from confide.sms import session_yaml
from confide.sms.session_document import SessionDocument, parse_session

VALID = """\
name: cubic-prod
version: "0.3"
predecessor: null
access_policy: {read: [owner], update: [owner, "0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"]}
services:
  - name: app
    measurements: ["sim:$SIM", "sgx:${SGX}"]
    command: python3 /app/app.py --n 3
    pwd: /app
    environment:
      MODE: production
      API_KEY: "$$confide:secrets:api_key$$"
      PRICE: "$$5"
    volumes: [input, output]
  - name: td
    measurements: ["tdx:$MRTD"]
    tdx: {rtmr1: $RTMR, rtmr2: $RTMR, td_attributes: "0000001000000000"}
    command: run
volumes:
  - name: input
  - {name: output, mode: output, path: /out}
secrets:
  - {name: api_key, kind: ascii, value: "s3cret-value"}
  - {name: signing, kind: key}
security:
  tolerate: [simulation, outdated-tcb]
  ignore_advisories: [INTEL-SA-00289]
"""
VARS = {"SIM": "ab" * 32, "SGX": "cd" * 32, "MRTD": "91" * 48, "RTMR": "a1" * 48}
# How a refusal starts: the source, then the line.
LINE = re.compile(r"s\.yml:[1-9][0-9]*: \S")
BOUND = 2.0  # seconds: a guard against blow-ups, not a benchmark
PROPERTY = settings(
    max_examples=200,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(text: str, variables: dict[str, str] | None = None) -> SessionDocument | None:
    """The property: a session (whose hash can be taken) or a line-numbered refusal."""
    start = time.perf_counter()
    refusal = ""
    session = None
    try:
        session = parse_session(text, VARS if variables is None else variables, "s.yml")
    except SessionError as exc:
        refusal = str(exc)
    assert time.perf_counter() - start < BOUND
    if session is None:
        assert LINE.match(refusal), refusal
    else:
        assert len(session.session_hash()) == 64
    return session


def test_the_valid_document_parses() -> None:
    assert check(VALID) is not None


# Every character, lone surrogates and control characters included.
ANY_CHARACTER = st.one_of(
    st.characters(exclude_categories=()),
    st.sampled_from(["\ud800", "\x00", "\t", "\r", "\x85", "\ufeff", "\u2028"]),
)


@PROPERTY
@given(st.text(alphabet=ANY_CHARACTER, max_size=400))
def test_random_text(text: str) -> None:
    check(text)


YAML_TOKENS = [
    "&a ",
    "*a",
    "&b [",
    "*b",
    "[",
    "]",
    "{",
    "}",
    ",",
    ": ",
    ":",
    "- ",
    "? ",
    "\n",
    "\n  ",
    "\n    ",
    "\t",
    "#",
    "'",
    '"',
    "|\n",
    ">-\n",
    "!!binary ",
    "!!str ",
    "!custom ",
    "!!map ",
    "<<: ",
    "---\n",
    "...\n",
    "%YAML 1.1\n---\n",
    "$",
    "$$",
    "${",
    "$SIM",
    "${X}",
    "$$confide:secrets:api_key$$",
    "$$confide:secrets:",
    "null",
    "~",
    "true",
    "0x",
    "1e3",
    "name",
    "services",
    "volumes",
    "secrets",
    "environment",
    "measurements",
    "mode",
    "output",
    "input",
    "tdx",
    "owner",
    "sim:",
    "tdx:",
    "sgx:",
    "é",
    "\ud800",
    "\x00",
]


@PROPERTY
@given(st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=5), max_size=60))
def test_random_token_soup(tokens: list[str]) -> None:
    check("".join(tokens))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """The valid document with a few edits: characters or YAML tokens inserted, removed
    or replaced, lines dropped or repeated."""
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "line", "repeat"]))
        token = draw(st.sampled_from(YAML_TOKENS) | st.text(alphabet=ANY_CHARACTER, max_size=3))
        if edit == "insert":
            text = text[:position] + token + text[position:]
        elif edit == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 20)) :]
        elif edit == "replace":
            text = text[:position] + token + text[position + len(token) :]
        else:
            lines = text.splitlines(keepends=True)
            index = min(position * len(lines) // (len(text) + 1), len(lines) - 1)
            repeat = [lines[index]] * draw(st.integers(2, 5)) if edit == "repeat" else []
            text = "".join(lines[:index] + repeat + lines[index + 1 :])
    return text


@PROPERTY
@given(mutated())
def test_mutated_valid_documents(text: str) -> None:
    check(text)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["owner", "input", "output", "key", "ascii", "sim:" + "ab" * 32, "$SIM"]),
)
KEYS = st.sampled_from(
    [
        "name",
        "version",
        "predecessor",
        "access_policy",
        "services",
        "volumes",
        "secrets",
        "security",
        "measurements",
        "command",
        "pwd",
        "environment",
        "tdx",
        "mode",
        "path",
        "kind",
        "value",
        "read",
        "update",
        "tolerate",
        "ignore_advisories",
        "rtmr1",
        "rtmr2",
    ]
) | st.text(max_size=8)
STRUCTURES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40,
)


@PROPERTY
@given(STRUCTURES, st.booleans())
def test_random_yaml_structures(document: Any, flow: bool) -> None:
    check(yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True))


@st.composite
def valid_with_a_value_replaced(draw: st.DrawFn) -> str:
    """The valid document's structure with one value, anywhere in it, replaced by a
    random structure: each field meets every kind of wrong value."""
    document = yaml.safe_load(VALID)
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(node, dict | list):
            for key, child in node.items() if isinstance(node, dict) else enumerate(node):
                walk(child, [*path, key])

    walk(document, [])
    path = draw(st.sampled_from(paths[1:]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = draw(STRUCTURES)
    return yaml.safe_dump(document, default_flow_style=draw(st.booleans()), allow_unicode=True)


@PROPERTY
@given(valid_with_a_value_replaced(), st.dictionaries(st.sampled_from(sorted(VARS)), st.text()))
def test_valid_structure_with_a_wrong_value(text: str, variables: dict[str, str]) -> None:
    check(text, {**VARS, **variables})


@settings(max_examples=50, deadline=2000)
@given(st.integers(0, 5_000), st.sampled_from(["[", "{a: ", "- ", "? ", "[{a: "]), st.booleans())
def test_nesting_of_any_depth(depth: int, opener: str, indent: bool) -> None:
    """A deeply nested document was a RecursionError in the composer (a 500)."""
    if indent:  # block style: each level one deeper
        check("".join(" " * level + "a:\n" for level in range(min(depth, 500))))
    else:
        check(opener * depth)


@settings(max_examples=100, deadline=2000)
@given(mutated() | st.text(alphabet=ANY_CHARACTER, max_size=200))
def test_the_pure_python_parser_too(text: str) -> None:
    """The fallback when PyYAML has no libyaml: the same property."""
    with mock.patch.object(session_yaml, "_Loader", yaml.SafeLoader):
        check(text)
