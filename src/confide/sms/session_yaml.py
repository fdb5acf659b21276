"""Bounded YAML for session documents: the node tree, composed under fixed limits.

Any wallet may send a session, so reading one must cost a bounded amount whatever it
holds. PyYAML's own composer shares an aliased node wherever ``*name`` appears, and a
reader that walks the tree then visits it once per alias (a 51 KB document of aliased
services and environments held the sms for 21 s); its composer also recurses once per
nesting level (a deeply nested document ended in a RecursionError). So this module
composes the tree itself from the parser's events, in a loop without recursion, and
refuses before any expansion:

- anchors and aliases (``&name``, ``*name``), outright: a session has no use for them;
- a document over ``MAX_DOCUMENT_BYTES`` of UTF-8, or text that is not UTF-8 at all;
- more than ``MAX_NODES`` nodes, or nesting deeper than ``MAX_DEPTH``.

Each refusal is a ``SessionError`` naming the line. The events come from libyaml when
PyYAML has it (about ten times faster than the pure-Python scanner, which stays the
fallback); the tags are resolved by PyYAML's resolver, as ``yaml.compose`` resolves them,
so a document parses to the same nodes, values and hash either way.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.resolver import Resolver

from confide.errors import SessionError

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 32

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NODE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def compose_session_yaml(text: str, source: str) -> yaml.Node | None:
    """The node tree of ``text`` (None for an empty document), within the limits above;
    ``SessionError`` naming the line for invalid YAML or anything over a limit."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise SessionError(f"{source}:{line}: not valid text (a lone UTF-16 surrogate)") from None
    if size > MAX_DOCUMENT_BYTES:
        line = _line_at_byte(text, MAX_DOCUMENT_BYTES)
        raise SessionError(
            f"{source}:{line}: the document is {size} bytes, over the limit of "
            f"{MAX_DOCUMENT_BYTES} bytes (MAX_DOCUMENT_BYTES)"
        )
    loader = None
    try:
        loader = _Loader(text)  # the pure-Python reader checks every character here
        return _Composer(loader, source).document()
    except yaml.YAMLError as exc:
        raise SessionError(
            f"{source}{_where(exc, text)}: not valid YAML ({_problem(exc)})"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


class _Composer:
    """Builds ``yaml.Node`` objects from events with an explicit stack."""

    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source
        self.resolver: Any = Resolver()  # untyped in the stubs
        self.nodes = 0

    def fail(self, mark: Any, message: str) -> SessionError:
        return SessionError(f"{self.source}:{mark.line + 1}: {message}")

    def document(self) -> yaml.Node | None:
        self.loader.get_event()  # StreamStartEvent
        if self.loader.check_event(yaml.StreamEndEvent):
            return None
        self.loader.get_event()  # DocumentStartEvent
        root = self.tree()
        self.loader.get_event()  # DocumentEndEvent
        if not self.loader.check_event(yaml.StreamEndEvent):
            mark = self.loader.peek_event().start_mark
            raise self.fail(mark, "a session is one YAML document (found a second one)")
        return root

    def tree(self) -> yaml.Node:
        stack: list[yaml.CollectionNode] = []
        keys: list[yaml.Node | None] = []  # per open mapping: the key awaiting its value
        while True:
            event = self.loader.get_event()
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                done: yaml.Node = stack.pop()
                keys.pop()
                done.end_mark = event.end_mark
            elif isinstance(event, _NODE_EVENTS):
                done_or_open = self.node(event)
                if isinstance(done_or_open, yaml.CollectionNode):
                    stack.append(done_or_open)
                    keys.append(None)
                    if len(stack) > MAX_DEPTH:
                        raise self.fail(
                            event.start_mark,
                            f"nested deeper than {MAX_DEPTH} levels (MAX_DEPTH)",
                        )
                    continue
                done = done_or_open
            elif isinstance(event, yaml.AliasEvent):
                raise self.fail(
                    event.start_mark,
                    f"alias *{event.anchor}: anchors and aliases (& and *) are not allowed "
                    f"in a session; write the value out",
                )
            else:  # the parser gives no other event inside a document
                raise self.fail(event.start_mark, f"unexpected YAML event {event!r}")
            if not stack:
                return done
            parent = stack[-1]
            if isinstance(parent, yaml.SequenceNode):
                parent.value.append(done)
            elif keys[-1] is None:
                keys[-1] = done
            else:
                parent.value.append((keys[-1], done))
                keys[-1] = None

    def node(self, event: Any) -> yaml.Node:
        if event.anchor is not None:
            raise self.fail(
                event.start_mark,
                f"anchor &{event.anchor}: anchors and aliases (& and *) are not allowed "
                f"in a session; write the value out",
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(event.start_mark, f"more than {MAX_NODES} YAML values (MAX_NODES)")
        tag = event.tag
        start: Any = event.start_mark  # libyaml's marks are its own class, with a line too
        if isinstance(event, yaml.ScalarEvent):
            if tag is None or tag == "!":
                tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
            end: Any = event.end_mark
            return yaml.ScalarNode(tag, event.value, start, end, style=event.style)
        kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
        if tag is None or tag == "!":
            tag = self.resolver.resolve(kind, None, event.implicit)
        return kind(tag, [], start, None, flow_style=event.flow_style)


def _line_at_byte(text: str, limit: int) -> int:
    """The line holding the ``limit``-th byte of ``text`` in UTF-8."""
    prefix = text.encode("utf-8")[:limit].decode("utf-8", "ignore")
    return prefix.count("\n") + 1


def _where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f":{mark.line + 1}"
    position = getattr(exc, "position", None)  # a ReaderError (a bad character)
    if isinstance(position, int):
        if _Loader is yaml.SafeLoader:  # a character offset
            return f":{text.count(chr(10), 0, position) + 1}"
        line = text.encode("utf-8").count(b"\n", 0, position) + 1  # libyaml's: in bytes
        return f":{line}"
    return ":1"


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else str(exc).splitlines()[0]
