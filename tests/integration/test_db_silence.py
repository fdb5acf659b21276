"""A PostgreSQL server that stops answering: connections open, nothing comes back.

Through a proxy that goes silent (its kernel still acknowledges, so no TCP timeout
fires), a statement and a new connection fail within seconds, as an unreachable
database (503), on both statement paths; a statement that is merely slow is cancelled by
the server's ``statement_timeout`` instead, and its connection lives on. The sms's
answers under the same fault are tested in test_sms_unavailable.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from confide.db import make_engine, reading, upgrade
from confide.db.availability import unavailability
from confide.db.direct import DirectStatement
from confide.db.engine import _WATCHES
from confide.db.schema import attest_nonces
from confide.db.silence import (
    CONNECT_TIMEOUT_S,
    SILENCE_MARGIN_S,
    STATEMENT_TIMEOUT_MS,
    libpq_timeouts,
)
from tests.integration.tcp_forwarder import TcpForwarder

# The longest a request may wait on a silent server: the server's own statement bound,
# the margin for its answer, the watch's interval, and some slack for a busy machine.
BOUND_S = STATEMENT_TIMEOUT_MS / 1000 + SILENCE_MARGIN_S + 1.5

ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def forwarder(database_url: str) -> Iterator[TcpForwarder]:
    """A proxy to the test database. Should a wait go on (no watch, as before it), the
    proxy is cut after 20 s, so the test fails on its time bound instead of hanging."""
    parsed = make_url(database_url)
    forwarder = TcpForwarder(parsed.host or "127.0.0.1", parsed.port or 5432)
    backstop = threading.Timer(20, forwarder.cut)
    backstop.start()
    yield forwarder
    backstop.cancel()
    forwarder.close()


def _through(database_url: str, forwarder: TcpForwarder, direct: bool) -> Engine:
    through = make_url(database_url).set(host="127.0.0.1", port=forwarder.port)
    engine = make_engine(through.render_as_string(hide_password=False), direct=direct)
    upgrade(engine)
    return engine


@pytest.mark.parametrize("direct", [True, False])
@ON_POSTGRESQL
def test_a_statement_to_a_silent_server_fails_within_seconds(
    database_url: str, forwarder: TcpForwarder, direct: bool
) -> None:
    engine = _through(database_url, forwarder, direct)
    peek = DirectStatement(select(attest_nonces.c.expires_at))
    try:
        with reading(engine) as connection:
            assert peek.all(connection, {}) == []
            forwarder.silence()
            start = time.monotonic()
            with pytest.raises(DBAPIError) as caught:
                peek.all(connection, {})
            took = time.monotonic() - start
        assert took < BOUND_S, took
        assert unavailability(caught.value) == "unreachable"  # answered 503
        assert caught.value.connection_invalidated
        assert _WATCHES[engine].ended == 1
        forwarder.cut()
        forwarder.restore()
        with reading(engine) as connection:  # a new connection once it answers again
            assert peek.all(connection, {}) == []
    finally:
        engine.dispose()


@ON_POSTGRESQL
def test_a_commit_to_a_silent_server_fails_within_seconds(
    database_url: str, forwarder: TcpForwarder
) -> None:
    """The server goes silent between a transaction's write and its COMMIT."""
    engine = _through(database_url, forwarder, True)
    try:
        with engine.connect() as connection:
            row = {"nonce": os.urandom(32), "expires_at": 1}
            connection.execute(insert(attest_nonces), row)
            forwarder.silence()
            start = time.monotonic()
            with pytest.raises(DBAPIError) as caught:
                connection.commit()
        assert time.monotonic() - start < BOUND_S
        assert unavailability(caught.value) == "unreachable"
    finally:
        engine.dispose()


@ON_POSTGRESQL
def test_connecting_to_a_silent_server_fails_within_seconds(
    database_url: str, forwarder: TcpForwarder
) -> None:
    engine = _through(database_url, forwarder, True)
    engine.dispose()  # no pooled connection left: the next one is a new one
    forwarder.silence()
    start = time.monotonic()
    try:
        with pytest.raises(DBAPIError) as caught, engine.connect():
            pass
        assert time.monotonic() - start < CONNECT_TIMEOUT_S + 1.5
        assert unavailability(caught.value) == "unreachable"
    finally:
        engine.dispose()


@ON_POSTGRESQL
def test_a_slow_statement_is_cancelled_by_the_server_and_its_connection_lives(
    database_url: str,
) -> None:
    """The server's statement_timeout ends a statement that runs too long (answered 503
    as a timeout); the watch leaves that connection alone, and it goes on working."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
            start = time.monotonic()
            with pytest.raises(DBAPIError) as caught:
                connection.execute(text("SELECT pg_sleep(30)"))
            assert time.monotonic() - start < STATEMENT_TIMEOUT_MS / 1000 + 1
            assert unavailability(caught.value) == "timeout"
            assert not caught.value.connection_invalidated
            connection.rollback()
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        assert _WATCHES[engine].ended == 0
    finally:
        engine.dispose()


def test_the_url_overrides_each_timeout() -> None:
    """What the URL sets stays; a statement_timeout it sets bounds the watch instead, and
    one it turns off turns the watch off."""
    plain, silence = libpq_timeouts(make_url("postgresql+psycopg://h/db"), 3000)
    assert plain["connect_timeout"] == CONNECT_TIMEOUT_S
    assert plain["options"] == "-c statement_timeout=3000"
    assert plain["tcp_user_timeout"] > 0 and plain["keepalives"] == 1
    assert silence == 3 + SILENCE_MARGIN_S
    url = make_url(
        "postgresql+psycopg://h/db?connect_timeout=9&tcp_user_timeout=0"
        "&options=-csearch_path%3Ds%20-cstatement_timeout%3D10s"
    )
    given, silence = libpq_timeouts(url, 3000)
    assert "connect_timeout" not in given and "tcp_user_timeout" not in given
    assert "options" not in given and given["keepalives_idle"] > 0
    assert silence == 10 + SILENCE_MARGIN_S
    off = make_url("postgresql+psycopg://h/db?options=-c%20statement_timeout%3D0")
    assert libpq_timeouts(off, 3000)[1] is None


@ON_POSTGRESQL
def test_the_search_path_of_the_url_is_kept(database_url: str) -> None:
    """statement_timeout joins the URL's own options (the tests' schema), not replaces."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            path = connection.execute(text("SHOW search_path")).scalar()
            timeout = connection.execute(text("SHOW statement_timeout")).scalar()
        assert str(path).startswith("confide_test_")
        assert timeout == f"{STATEMENT_TIMEOUT_MS // 1000}s"
    finally:
        engine.dispose()
