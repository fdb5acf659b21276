"""The relay's wire format: JSON lines over one AF_UNIX stream socket.

One request per line, one answer per line, strictly in turn (the client holds a lock from
sending a request to reading its answer). A ``connect`` answer carries the connected TCP
socket as an SCM_RIGHTS file descriptor on the message of its line::

    {"op": "connect", "host": h, "port": p}  -> {"ok": true} + fd | {"ok": false, "error": …}
    {"op": "sign", "message": text}          -> {"ok": true, "signature": "0x…", "address": "0x…"}
    {"op": "stage", "status": "ATTESTING"}   -> {"ok": true}
    {"op": "job"}                            -> {"ok": true} | {"ok": false, "error": …}

``job`` is a pre-warmed runtime's first request: the answer comes once the worker has
claimed a task and written its job into the job directory (``ok``), or the worker stops
(``ok`` false: the runtime ends without a report). Until it is answered ``ok``, such a
relay refuses every other request.
"""

from __future__ import annotations

import array
import contextlib
import json
import socket
from typing import Any

from confide.errors import ConfideError

MAX_LINE_BYTES = 64 * 1024  # a canonical request to sign is well under 4 KiB
PROBE = "relay-address-probe"  # the one other text signed: how a runtime learns the address
REQUEST_LABEL = "confide-request-v1\n"  # the only texts the worker's wallet signs for a runtime
STAGES = ("PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE")
_RECV = 4096


class RelayError(ConfideError):
    """The relay refused a request, or the channel to it broke."""


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise RelayError("the relay channel carried a line that is not JSON") from None
    if not isinstance(document, dict):
        raise RelayError("the relay channel carried a line that is not a JSON object")
    return document


class LineReader:
    """Reads whole lines (bounded) from a stream socket, with any file descriptors that
    arrive on them."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._fds: list[int] = []

    def read(self) -> tuple[bytes, list[int]] | None:
        """The next line (without its newline) and the fds received with it; None at EOF.
        Bytes after the line stay buffered for the next call."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE_BYTES:
                self._close_fds()
                raise RelayError(f"a relay line is longer than {MAX_LINE_BYTES} bytes")
            data, fds = self._receive()
            self._fds.extend(fds)
            if not data:
                self._close_fds()
                if self._buffer:
                    raise RelayError("the relay channel closed in the middle of a line")
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        if len(line) > MAX_LINE_BYTES:
            self._close_fds()
            raise RelayError(f"a relay line is longer than {MAX_LINE_BYTES} bytes")
        fds, self._fds = self._fds, []
        return line, fds

    def _receive(self) -> tuple[bytes, list[int]]:
        fds = array.array("i")
        space = socket.CMSG_SPACE(4 * fds.itemsize)
        # Close-on-exec from the start: a received socket must never leak into a child.
        flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
        data, ancillary, _, _ = self._sock.recvmsg(_RECV, space, flags)
        received: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % fds.itemsize
                fds.frombytes(payload[:usable])
                received.extend(fds)
                del fds[:]
        return data, received

    def _close_fds(self) -> None:
        for fd in self._fds:
            close_quietly(fd)
        self._fds = []


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        socket.close(fd)
