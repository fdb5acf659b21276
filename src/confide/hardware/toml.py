"""A small TOML writer for Gramine manifests.

No TOML writer is pinned in constraints.txt (Python's ``tomllib`` only reads), so the
manifest is written here: top-level dotted keys, each value a string, an integer, a
boolean, an array or an inline table. Every string is a TOML basic string with every
character TOML does not allow raw escaped (``"``, ``\\``, control characters and DEL), and
every key that is not a bare key is quoted the same way, so no bundle file name can
break out of its value. The tests read every document back with ``tomllib``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias

Value: TypeAlias = "str | int | bool | Sequence[Value] | Mapping[str, Value]"

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_SHORT_ESCAPES |= {"\f": "\\f", "\r": "\\r"}


class TomlError(ValueError):
    """A value the writer cannot express (a float, None, a surrogate)."""


def string(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise TomlError(f"{text!r} holds a lone surrogate: not valid TOML text")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def key(part: str) -> str:
    """One key part: bare when it can be, quoted otherwise."""
    return part if _BARE_KEY.fullmatch(part) else string(part)


def value(item: Value, indent: str = "") -> str:
    if isinstance(item, bool):  # before int: a bool is an int in Python
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, Mapping):
        fields = ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items())
        return "{ " + fields + " }" if fields else "{}"
    if isinstance(item, Sequence):
        if not item:
            return "[]"
        inner = indent + "  "
        lines = [f"{inner}{value(element, inner)}," for element in item]
        return "[\n" + "\n".join(lines) + f"\n{indent}]"
    raise TomlError(f"cannot write {type(item).__name__} as TOML")


def dumps(document: Sequence[tuple[str | tuple[str, ...], Value]], header: str = "") -> str:
    """A TOML document of ``(key, value)`` lines, in order. A key is its parts joined by
    ``.`` or, for a part that holds a dot itself, a tuple of parts."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    for dotted, item in document:
        parts = dotted.split(".") if isinstance(dotted, str) else dotted
        lines.append(f"{'.'.join(key(part) for part in parts)} = {value(item)}")
    return "\n".join(lines) + "\n"
