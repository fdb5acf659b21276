"""Bounds on a PostgreSQL server that stops answering, so a request fails (503) in seconds.

What libpq offers bounds most of it, set by :func:`libpq_timeouts` unless the URL sets
its own: ``connect_timeout`` (a new connection, through its startup and authentication),
``statement_timeout`` (the server cancels a statement that runs or waits for a lock too
long), TCP keepalives (an idle pooled connection to a host that vanished) and
``tcp_user_timeout`` (data the peer does not acknowledge: a network that drops packets
ends the connection in seconds, not after the kernel's ~15 minutes of retries).

One case is left: a peer whose kernel acknowledges but that never answers (a stopped
server, a proxy or load balancer that hangs). libpq then waits on its socket forever,
with the request's thread. :class:`SilenceWatch` covers it: a thread that looks at each
connection twice a second, and shuts down the socket of one that has had a command in
flight (libpq's transaction status ACTIVE) at every look for longer than the server's
own ``statement_timeout`` allows plus a margin for its answer, with no byte received in
that time either (``TCP_INFO``'s last receipt: a long answer still arriving is no
silence). libpq then reads end of file, psycopg raises an OperationalError on a broken
connection, SQLAlchemy invalidates it, and the request is answered 503 like any
database outage. A connection over a Unix socket (no network in between) is not
watched.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL

CONNECT_TIMEOUT_S = 3  # libpq takes 2 at least
STATEMENT_TIMEOUT_MS = 3000  # an sms statement takes milliseconds; 3 s is a stuck one
# An idle connection is probed after 10 s, then every 3 s; 3 unanswered probes end it.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3}
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT_MS = 5000  # data unacknowledged this long ends the connection
SILENCE_MARGIN_S = 1.5  # past statement_timeout: time for the server's cancel to arrive
WATCH_INTERVAL_S = 0.5

_TCP_INFO = struct.Struct("=8B9I4I")  # Linux struct tcp_info up to last_ack_recv
# A command in flight: libpq's PQTRANS_ACTIVE, as psycopg's public ConnectionInfo gives it
# (its TransactionStatus.ACTIVE, an IntEnum: equal to 1).
_ACTIVE = 1
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0}


def libpq_timeouts(url: URL, statement_timeout_ms: int) -> tuple[dict[str, Any], float | None]:
    """The connection parameters to add for ``url`` (what its query leaves unset), and
    the silence after which :class:`SilenceWatch` ends a connection (None: not watched,
    when the URL turns ``statement_timeout`` off or sets it in a form not read here)."""
    query = url.query
    added: dict[str, Any] = {}
    if "connect_timeout" not in query:
        added["connect_timeout"] = CONNECT_TIMEOUT_S
    for name, value in {**KEEPALIVES, "keepalives_count": KEEPALIVES_COUNT}.items():
        if name not in query:
            added[name] = value
    if "tcp_user_timeout" not in query:
        added["tcp_user_timeout"] = TCP_USER_TIMEOUT_MS
    given = query.get("options", "")
    options = " ".join(given) if isinstance(given, tuple) else given
    found = re.search(r"statement_timeout\s*=\s*(\S+)", options)
    if found is None:
        added["options"] = f"{options} -c statement_timeout={statement_timeout_ms}".strip()
        timeout_ms: float | None = statement_timeout_ms
    else:
        timeout_ms = _milliseconds(found.group(1))
    if not timeout_ms:
        return added, None
    return added, timeout_ms / 1000 + SILENCE_MARGIN_S


def _milliseconds(text: str) -> float | None:
    """A PostgreSQL duration setting (``5000``, ``5s``, ``1min``) in ms; None if unread."""
    match = re.fullmatch(r"'?(\d+)\s*(us|ms|s|min|h)?'?", text.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2) or "ms"]


class SilenceWatch:
    """Ends the connections of one engine that wait on a silent peer (see the module)."""

    def __init__(self, engine: Engine, silence_s: float) -> None:
        self.silence_s = silence_s
        self._lock = threading.Lock()
        # id(driver): [driver, fd, when a command was first seen in flight (or None)]
        self._watched: dict[int, list[Any]] = {}
        self._ended = 0
        event.listen(engine, "connect", self._connected)
        for name in ("close", "close_detached", "invalidate", "soft_invalidate"):
            event.listen(engine, name, self._closing)
        # The thread holds the watch weakly: an engine that is gone stops it.
        threading.Thread(
            target=_watch, args=(weakref.ref(self),), name="confide-db-silence", daemon=True
        ).start()

    @contextmanager
    def unwatched(self, driver: Any) -> Iterator[None]:
        """A block whose statements may rightly wait long (migrations, at start)."""
        with self._lock:
            entry = self._watched.pop(id(driver), None)
        try:
            yield
        finally:
            if entry is not None and not getattr(driver, "closed", True):
                with self._lock:
                    self._watched[id(driver)] = entry

    @property
    def ended(self) -> int:
        """How many connections it has ended (for tests and logs)."""
        return self._ended

    def _connected(self, driver: Any, record: Any) -> None:
        del record
        try:
            fd = driver.fileno()
            sock = socket.socket(fileno=fd)  # only to ask its family; detached below
        except (OSError, ValueError, AttributeError):
            return
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return
        finally:
            sock.detach()
        with self._lock:
            self._watched[id(driver)] = [driver, fd, None]

    def _closing(self, driver: Any, *rest: Any) -> None:
        """Before the pool closes it: the descriptor may be another file's afterwards."""
        del rest
        with self._lock:
            self._watched.pop(id(driver), None)

    def check(self) -> None:
        """One look at every watched connection (the watch thread's work). The lock is
        held throughout: a connection being closed (whose pool event waits for it) is not
        looked at, nor its descriptor shut once it may be another file's."""
        now = time.monotonic()
        with self._lock:
            for key, entry in list(self._watched.items()):
                driver, fd, since = entry
                if getattr(driver, "closed", True):
                    del self._watched[key]
                    continue
                if driver.info.transaction_status != _ACTIVE:
                    entry[2] = None
                    continue
                if since is None:
                    entry[2] = since = now
                quiet = _quiet_for(fd)
                if quiet is not None and min(now - since, quiet) > self.silence_s:
                    del self._watched[key]
                    self._ended += 1
                    _shut(fd)


def _watch(ref: weakref.ref[SilenceWatch]) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        watch = ref()
        if watch is None:
            return
        watch.check()
        del watch


def _quiet_for(fd: int) -> float | None:
    """Seconds since the last byte was received on the TCP socket ``fd`` (None: unread)."""
    sock = socket.socket(fileno=fd)
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return None
    finally:
        sock.detach()
    if len(info) < _TCP_INFO.size:
        return None
    fields: tuple[int, ...] = _TCP_INFO.unpack(info)
    return fields[-2] / 1000  # tcpi_last_data_recv, in milliseconds


def _shut(fd: int) -> None:
    """End the connection under libpq's feet: its wait wakes to end of file."""
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()
