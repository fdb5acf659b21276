"""DirectStatement against Connection.execute, on real SQLite and PostgreSQL: the same rows
and the same effects, inside SQLAlchemy's transaction, and driver errors as SQLAlchemy's.

The tests that take the ``engine`` fixture run on both paths: on the driver (direct) and
through ``Connection.execute`` (the fallback of ``CONFIDE_DB_DIRECT=0``); those about
libpq's prepared statements make their engine with ``direct=True``."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, create_engine, delete, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from confide.db import make_engine, upgrade
from confide.db.direct import (
    _LIBPQ,
    DIRECT_ENV,
    DIRECT_OPTION,
    INSERT_ROWS,
    DirectStatement,
    InsertRows,
)
from confide.db.engine import connect_url, reading
from confide.db.schema import attest_nonces, secrets
from tests.integration.tcp_forwarder import TcpForwarder

NOW = 1_800_000_000
KEY = {"owner": "0x" + "a" * 40, "kind": "requester", "subject": "", "name": "x1"}
WHERE = (
    secrets.c.owner == bindparam("owner"),
    secrets.c.kind == bindparam("kind"),
    secrets.c.subject == bindparam("subject"),
    secrets.c.name == bindparam("name"),
)
LATEST = select(secrets).where(*WHERE).order_by(secrets.c.version.desc()).limit(1)
MAX_VERSION = select(func.max(secrets.c.version)).where(*WHERE)
COLUMNS = (
    "row_id",
    "owner",
    "kind",
    "name",
    "subject",
    "version",
    "kek_id",
    "wrapped_key",
    "ciphertext",
    "created_at",
    "policy",
)


@pytest.fixture(params=["direct", "core"])
def engine(request: pytest.FixtureRequest, database_url: str) -> Engine:
    engine = make_engine(database_url, direct=request.param == "direct")
    upgrade(engine)
    return engine


def _row(version: int) -> dict[str, object]:
    return {
        **KEY,
        "row_id": os.urandom(16).hex(),
        "version": version,
        "kek_id": "k-test",
        "wrapped_key": os.urandom(40),
        "ciphertext": b"\x00\xff" + os.urandom(30),
        "created_at": NOW + version,
        "policy": "",
    }


def test_rows_and_effects_match_core(engine: Engine) -> None:
    put = DirectStatement(insert(secrets), columns=COLUMNS)
    written = [_row(v) for v in (1, 2, 3)]
    with engine.begin() as connection:
        for row in written:
            assert put.execute(connection, row) == 1
    latest, max_version = DirectStatement(LATEST), DirectStatement(MAX_VERSION)
    with reading(engine) as connection:
        direct = latest.first(connection, KEY)
        core = connection.execute(LATEST, KEY).first()
        assert direct is not None and core is not None
        assert tuple(direct) == tuple(core)
        assert isinstance(direct.wrapped_key, bytes)
        assert direct.ciphertext == written[2]["ciphertext"]
        assert direct.version == 3
        assert max_version.first(connection, KEY)[0] == 3
        assert latest.first(connection, {**KEY, "name": "absent"}) is None
        assert max_version.first(connection, {**KEY, "name": "absent"})[0] is None
        assert (
            len(DirectStatement(select(secrets.c.version).where(*WHERE)).all(connection, KEY)) == 3
        )


def test_writes_belong_to_the_callers_transaction(engine: Engine) -> None:
    put = DirectStatement(insert(secrets), columns=COLUMNS)

    def write_then_fail() -> None:
        with engine.begin() as connection:
            put.execute(connection, _row(1))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        write_then_fail()
    with engine.begin() as connection:
        assert connection.execute(select(func.count()).select_from(secrets)).scalar() == 0
        put.execute(connection, _row(1))
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(secrets)).scalar() == 1


def test_delete_returning_uses_a_row_once(engine: Engine) -> None:
    take = DirectStatement(
        delete(attest_nonces)
        .where(attest_nonces.c.nonce == bindparam("nonce"))
        .returning(attest_nonces.c.expires_at)
    )
    nonce = os.urandom(32)
    with engine.begin() as connection:
        connection.execute(insert(attest_nonces), {"nonce": nonce, "expires_at": NOW})
    with engine.begin() as connection:
        row = take.first(connection, {"nonce": nonce})
        assert row is not None and row.expires_at == NOW
    with engine.begin() as connection:
        assert take.first(connection, {"nonce": nonce}) is None


def test_a_constraint_violation_is_sqlalchemys_integrity_error(engine: Engine) -> None:
    put = DirectStatement(insert(attest_nonces), columns=("nonce", "expires_at"))
    nonce = os.urandom(32)
    with engine.begin() as connection:
        put.execute(connection, {"nonce": nonce, "expires_at": NOW})
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        put.execute(connection, {"nonce": nonce, "expires_at": NOW})
    # Its message (which gets logged) leaves the parameters out, through Core as well.
    # (PostgreSQL's own detail names the duplicate key; no sealed value is part of a key.)
    assert "parameters hidden" in str(raised.value)
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        connection.execute(insert(attest_nonces), {"nonce": nonce, "expires_at": NOW})
    assert "parameters hidden" in str(raised.value)
    with engine.connect() as connection:  # the failed transaction left nothing behind
        assert connection.execute(select(func.count()).select_from(attest_nonces)).scalar() == 1


def test_a_missing_parameter_is_refused_before_the_driver() -> None:
    engine = make_engine("sqlite://")
    statement = DirectStatement(text("SELECT :a + :b"))
    with engine.connect() as connection, pytest.raises(KeyError):
        statement.first(connection, {"a": 1})


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_postgresql_connection_is_invalidated(database_url: str, direct: bool) -> None:
    parsed = make_url(database_url)
    forwarder = TcpForwarder(parsed.host or "127.0.0.1", parsed.port or 5432)
    try:
        through = parsed.set(host="127.0.0.1", port=forwarder.port)
        engine = make_engine(through.render_as_string(hide_password=False), direct=direct)
        upgrade(engine)
        peek = DirectStatement(select(attest_nonces.c.expires_at))
        with reading(engine) as connection:
            peek.all(connection, {})
            forwarder.cut()
            with pytest.raises(DBAPIError) as caught:
                peek.all(connection, {})
            assert caught.value.connection_invalidated
            assert connection.invalidated
        forwarder.restore()
        with reading(engine) as connection:  # a new connection from the pool works
            assert peek.all(connection, {}) == []
            # with statements of its own (the record's info outlived the old connection)
            if direct:
                driver = connection.connection.dbapi_connection
                assert connection.info[_LIBPQ].driver is driver
        engine.dispose()
    finally:
        forwarder.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_the_server_terminated_is_replaced_at_checkout(database_url: str) -> None:
    """A database restart ends every session: the pooled connection is found closed at
    checkout (a poll of its socket, no round trip) and replaced, so no request fails."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        admin = make_engine(database_url)
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()
        for _ in range(50):  # the server's notice and end of file reach the socket
            with engine.connect() as connection:
                raw = connection.connection.dbapi_connection
                assert raw is not None
                if raw.info.backend_pid != pid:
                    break
                time.sleep(0.02)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_checkout_check_works_past_descriptor_1024(database_url: str) -> None:
    """A busy server holds many descriptors: select() cannot watch one numbered 1024 or
    more, so the check polls; a healthy connection there is kept, not replaced."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.dup(0) for _ in range(1100)]
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            assert raw is not None and raw.fileno() >= 1024
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as connection:  # checked at checkout, found healthy
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() == pid
    finally:
        engine.dispose()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_insert_missing_a_column_is_refused(engine: Engine) -> None:
    """Core's placeholder for an unbound insert column must never reach the database."""
    put = DirectStatement(insert(attest_nonces), columns=("nonce", "expires_at"))
    with engine.begin() as connection, pytest.raises(KeyError):
        put.execute(connection, {"nonce": os.urandom(32)})
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(attest_nonces)).scalar() == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_psycopg_statements_go_to_libpq_prepared_once(database_url: str) -> None:
    """On psycopg a statement is prepared on its connection's first use and executed by
    name after; a failed one leaves the transaction to psycopg's rollback, and the
    connection goes on with what it prepared."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, direct=True)
    upgrade(engine)
    put = DirectStatement(insert(attest_nonces), columns=("nonce", "expires_at"))
    count = DirectStatement(select(func.count()).select_from(attest_nonces))
    prepared = text("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'confide_%'")
    nonce = os.urandom(32)
    with engine.begin() as connection:
        put.execute(connection, {"nonce": nonce, "expires_at": NOW})
        assert count.first(connection, {})[0] == 1
        assert count.first(connection, {})[0] == 1
        assert connection.execute(prepared).scalar() == 2  # one each, used again
        driver = connection.connection.dbapi_connection
        assert driver is not None and driver.info.transaction_status.name == "INTRANS"
    with pytest.raises(IntegrityError), engine.begin() as connection:
        put.execute(connection, {"nonce": nonce, "expires_at": NOW})
    with engine.begin() as connection:  # the same pooled connection, rolled back and reused
        assert count.first(connection, {})[0] == 1
        assert connection.execute(prepared).scalar() == 2
        assert connection.info[_LIBPQ].driver is driver
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_read_only_postgresql_transaction_stays_read_only(database_url: str) -> None:
    """A transaction with options (here READ ONLY) is begun by psycopg, as its options
    say, not by a plain BEGIN: a write in it is refused by PostgreSQL."""
    engine = make_engine(database_url, execution_options={"postgresql_readonly": True})
    upgrade(make_engine(database_url))
    put = DirectStatement(insert(attest_nonces), columns=("nonce", "expires_at"))
    count = DirectStatement(select(func.count()).select_from(attest_nonces))
    with engine.connect() as connection:
        assert count.first(connection, {})[0] == 0
        with pytest.raises(DBAPIError, match="read-only transaction"):
            put.execute(connection, {"nonce": os.urandom(32), "expires_at": NOW})
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_prepared_statements_survive_rollbacks_and_recover_from_a_deallocate(
    database_url: str,
) -> None:
    """A rollback keeps what DirectStatement prepared, even after Core statements ran
    often (psycopg's own preparing, which deallocates everything at a rollback, is off);
    a DEALLOCATE ALL fails the one statement that finds its name gone, not the next."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, direct=True)
    upgrade(engine)
    count = DirectStatement(select(func.count()).select_from(attest_nonces))
    core = select(func.count()).select_from(attest_nonces)
    for _ in range(3):
        with engine.connect() as connection, connection.begin() as transaction:
            assert count.first(connection, {})[0] == 0
            for _ in range(8):
                assert connection.execute(core).scalar() == 0
            transaction.rollback()
    with engine.connect() as connection:
        assert count.first(connection, {})[0] == 0
        connection.execute(text("DEALLOCATE ALL"))
        connection.commit()
        with pytest.raises(DBAPIError, match="does not exist"):
            count.first(connection, {})
        connection.rollback()
        assert count.first(connection, {})[0] == 0  # prepared again
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_one_deallocated_statement_fails_once_and_the_others_go_on(database_url: str) -> None:
    """A single statement deallocated behind our back fails once; it is prepared again
    under its name (which names what it is), and the statements still prepared are
    used as they are."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, direct=True)
    upgrade(engine)
    count = DirectStatement(select(func.count()).select_from(attest_nonces))
    latest = DirectStatement(LATEST)
    with engine.connect() as connection:
        assert count.first(connection, {})[0] == 0
        assert latest.first(connection, KEY) is None
        names = set(connection.info[_LIBPQ].prepared.values())
        assert len(names) == 2
        gone = connection.info[_LIBPQ].prepared[
            next(k for k in connection.info[_LIBPQ].prepared if b"count" in k[0])
        ]
        connection.exec_driver_sql(f"DEALLOCATE {gone.decode()}")
        connection.commit()
        with pytest.raises(DBAPIError, match="does not exist"):
            count.first(connection, {})
        connection.rollback()
        for _ in range(2):
            assert count.first(connection, {})[0] == 0
            assert latest.first(connection, KEY) is None
            connection.rollback()
        assert set(connection.info[_LIBPQ].prepared.values()) == names
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_plan_a_migration_made_stale_fails_once(database_url: str) -> None:
    """A column's type changed while a statement was prepared: PostgreSQL refuses the
    old plan once; the statement is deallocated and prepared again, in the next
    transaction, and reads the new type."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, direct=True)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE direct_stale (a integer)")
        connection.exec_driver_sql("INSERT INTO direct_stale VALUES (7)")
    read = DirectStatement(text("SELECT a FROM direct_stale"))
    try:
        with engine.connect() as connection:
            assert read.first(connection, {})[0] == 7
            connection.rollback()
            connection.exec_driver_sql("ALTER TABLE direct_stale ALTER COLUMN a TYPE text")
            connection.commit()
            with pytest.raises(DBAPIError, match="cached plan"):
                read.first(connection, {})
            connection.rollback()
            assert read.first(connection, {})[0] == "7"
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE direct_stale")
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_engine_made_elsewhere_does_not_deallocate_ours(database_url: str) -> None:
    """An engine not made by make_engine (psycopg's own preparing on by default): the
    first direct statement on a connection turns psycopg's preparing off, so Core
    statements run often and a rollback leave the prepared statements in place."""
    made = make_engine(database_url)
    upgrade(made)
    made.dispose()
    engine = create_engine(
        connect_url(database_url), pool_size=1, max_overflow=0, hide_parameters=True
    )
    count = DirectStatement(select(func.count()).select_from(attest_nonces))
    core = select(func.count()).select_from(attest_nonces)
    try:
        with engine.connect() as connection:
            for _ in range(3):
                assert count.first(connection, {})[0] == 0
                for _ in range(8):
                    assert connection.execute(core).scalar() == 0
                connection.rollback()
    finally:
        engine.dispose()


def test_placeholders_become_numbered_parameters() -> None:
    from confide.db.direct import _libpq_form

    form = _libpq_form("SELECT %(a)s, %(b-c)s WHERE x = %(a)s AND y LIKE 'p%%'")
    assert form.sql == b"SELECT $1, $2 WHERE x = $1 AND y LIKE 'p%'"
    assert form.names == ("a", "b-c")


def test_rows_inserted_together_belong_to_the_callers_transaction(engine: Engine) -> None:
    """Multi-row INSERTs (one per INSERT_ROWS rows), in the caller's transaction: rolled
    back with it, committed with it; a row that breaks a constraint keeps none."""
    put = InsertRows(secrets, COLUMNS)
    count = select(func.count()).select_from(secrets)
    with engine.connect() as connection, connection.begin() as transaction:
        put.execute(connection, [_row(v) for v in (1, 2, 3)])
        assert connection.execute(count).scalar() == 3
        transaction.rollback()
    many = INSERT_ROWS + 3  # two statements
    with engine.begin() as connection:
        put.execute(connection, [])  # nothing to do: no statement
        put.execute(connection, [_row(v) for v in range(1, many + 1)])
    with reading(engine) as connection:
        assert connection.execute(count).scalar() == many
        versions = connection.execute(select(secrets.c.version).order_by(secrets.c.version))
        assert [v for (v,) in versions] == list(range(1, many + 1))
        stored = connection.execute(LATEST, KEY).first()
        assert stored is not None and isinstance(stored.wrapped_key, bytes)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        put.execute(connection, [_row(many + 1), _row(many + 1)])  # the second breaks UNIQUE
    with reading(engine) as connection:
        assert connection.execute(count).scalar() == many  # neither was kept


def test_the_switch_is_read_once_when_the_engine_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CONFIDE_DB_DIRECT=0 makes an engine's statements take the fallback; what the
    environment says later does not change an engine made before, and ``direct=`` wins."""
    url = f"sqlite:///{tmp_path / 'switch.db'}"
    monkeypatch.setenv(DIRECT_ENV, "0")
    fallback = make_engine(url)
    chosen = make_engine(url, direct=True)
    monkeypatch.setenv(DIRECT_ENV, "1")
    assert fallback.get_execution_options()[DIRECT_OPTION] is False
    assert chosen.get_execution_options()[DIRECT_OPTION] is True
    assert make_engine(url).get_execution_options()[DIRECT_OPTION] is True
    monkeypatch.delenv(DIRECT_ENV)
    assert make_engine(url).get_execution_options()[DIRECT_OPTION] is True


def test_the_fallback_touches_no_private_api(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """With the private path broken (as an upgrade of SQLAlchemy or psycopg could break
    it), an engine on the fallback runs every kind of statement, with the same results."""
    engine = make_engine(database_url, direct=False)
    upgrade(engine)

    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("the private path was used")

    monkeypatch.setattr(DirectStatement, "_compile", broken)
    monkeypatch.setattr("confide.db.direct._LibpqState", broken)
    monkeypatch.setattr("confide.db.direct._run_cursor", broken)
    put = DirectStatement(insert(secrets), columns=COLUMNS)
    with engine.begin() as connection:
        assert put.execute(connection, _row(1)) == 1
        InsertRows(secrets, COLUMNS).execute(connection, [_row(2), _row(3)])
    with reading(engine) as connection:
        row = DirectStatement(LATEST).first(connection, KEY)
        assert row is not None and row.version == 3 and isinstance(row.wrapped_key, bytes)
        assert DirectStatement(MAX_VERSION).first(connection, KEY)[0] == 3
        assert (
            len(DirectStatement(select(secrets.c.version).where(*WHERE)).all(connection, KEY)) == 3
        )
    engine.dispose()


def test_both_paths_give_the_same_results(database_url: str) -> None:
    """Every statement shape the stores use (an insert, rows inserted together, a latest
    row, an aggregate, a delete with RETURNING, a row count, a constraint violation, a
    missing parameter) answers the same on the driver and through Connection.execute."""
    engines = {
        direct: make_engine(database_url, direct=direct, pool_size=1, max_overflow=0)
        for direct in (True, False)
    }
    upgrade(engines[True])
    put = DirectStatement(insert(secrets), columns=COLUMNS)
    together = InsertRows(secrets, COLUMNS)
    latest, max_version = DirectStatement(LATEST), DirectStatement(MAX_VERSION)
    versions = DirectStatement(select(secrets.c.version).where(*WHERE).order_by("version"))
    nonce_put = DirectStatement(insert(attest_nonces), columns=("nonce", "expires_at"))
    take = DirectStatement(
        delete(attest_nonces)
        .where(attest_nonces.c.nonce == bindparam("nonce"))
        .returning(attest_nonces.c.expires_at)
    )
    prune = DirectStatement(delete(attest_nonces).where(attest_nonces.c.expires_at < NOW + 5))
    answers: dict[bool, list[object]] = {}
    for direct, engine in engines.items():
        name = f"x-{direct}"
        key = {**KEY, "name": name}
        seen: list[object] = []
        with engine.begin() as connection:
            seen.append(put.execute(connection, {**_row(1), "name": name}))
            together.execute(connection, [{**_row(v), "name": name} for v in (2, 3, 4)])
            nonces = [os.urandom(32) for _ in range(4)]
            for i, nonce in enumerate(nonces):
                seen.append(nonce_put.execute(connection, {"nonce": nonce, "expires_at": NOW + i}))
        with reading(engine) as connection:
            row = latest.first(connection, key)
            assert row is not None
            seen += [row.version, row.kind, type(row.wrapped_key), len(row)]
            seen.append(max_version.first(connection, key)[0])
            seen.append([tuple(r) for r in versions.all(connection, key)])
            seen.append(latest.first(connection, {**key, "name": "absent"}))
        with engine.begin() as connection:
            seen.append(tuple(take.first(connection, {"nonce": nonces[3]})))
            seen.append(take.first(connection, {"nonce": nonces[3]}))
            seen.append(prune.execute(connection, {}))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            put.execute(connection, {**_row(1), "name": name})
        with engine.connect() as connection, pytest.raises(KeyError):
            nonce_put.execute(connection, {"nonce": os.urandom(32)})
        with engine.connect() as connection, pytest.raises(KeyError):
            latest.first(connection, {"owner": KEY["owner"]})
        answers[direct] = seen
        engine.dispose()
    assert answers[True] == answers[False]
    assert answers[True][:6] == [1, 1, 1, 1, 1, 4]


PRIVATE_PARTS = (
    "pgconn",
    "Transformer",
    "psycopg.pq",
    "from psycopg import pq",
    "construct_params",
    "positiontup",
    ".binds",
    "dbapi_connection.cursor",
)


def test_only_the_direct_module_touches_private_apis() -> None:
    """The fence: SQLAlchemy's compiled internals and psycopg's libpq layer are used in
    confide.db.direct alone (pyproject.toml bounds both libraries for it)."""
    src = Path(__file__).resolve().parents[2] / "src" / "confide"
    found = [
        (str(path.relative_to(src)), part)
        for path in sorted(src.rglob("*.py"))
        if path.name != "direct.py" or path.parent.name != "db"
        for part in PRIVATE_PARTS
        if part in path.read_text()
    ]
    assert found == []
