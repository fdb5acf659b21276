"""A locked or unreachable database: 503 with Retry-After, nothing half-written, and the
same push, re-signed, succeeds once the database is back. Real servers, real databases."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from confide.attestation.evidence import Evidence
from confide.attestation.sim import SimAttester
from confide.client.enclave import attest_and_open
from confide.client.sms import SmsClient
from confide.crypto.requests import HEADER_NONCE, sign_request
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.wallet import Wallet
from confide.db import make_engine, reading
from confide.db.audit import verify_chain
from confide.db.availability import UNAVAILABLE_DETAIL
from confide.db.schema import audit_log, request_nonces, secrets
from confide.db.silence import SILENCE_MARGIN_S, STATEMENT_TIMEOUT_MS
from tests.conftest import run_cli
from tests.integration.sms_server import audience_of, running_sms
from tests.integration.tcp_forwarder import TcpForwarder
from tests.integration.test_attest_sessions import API_KEY, APP, push_input, sms_key, world

ALICE = Wallet.generate()
VALUE = b"UNAVAILABLE-SECRET-VALUE-3"
# A request waiting on a silent PostgreSQL: the server's statement_timeout, the margin for
# its answer, the watch's interval (confide.db.silence), and slack for a busy machine.
SILENT_BOUND_S = STATEMENT_TIMEOUT_MS / 1000 + SILENCE_MARGIN_S + 2.5


class RecordingTransport(httpx.HTTPTransport):
    """A real transport that notes each request's nonce (to see that retries re-sign)."""

    def __init__(self) -> None:
        super().__init__()
        self.nonces: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if HEADER_NONCE.lower() in request.headers:
            self.nonces.append(request.headers[HEADER_NONCE])
        return super().handle_request(request)


def _signed_put(base: str, name: str, body: bytes = VALUE) -> httpx.Response:
    path = f"/v1/requesters/{ALICE.address}/secrets/{name}"
    headers = sign_request(
        ALICE,
        audience=audience_of(base),
        method="PUT",
        path=path,
        body=body,
        content_type="application/octet-stream",
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    return httpx.put(base + path, content=body, headers=headers, timeout=30)


def _head(base: str, name: str) -> int:
    path = f"/v1/requesters/{ALICE.address}/secrets/{name}"
    return httpx.head(base + path, timeout=30).status_code


def _heads(base: str, names: list[str]) -> list[int]:
    """HEAD checks of ``names`` sent at once; their statuses in order."""

    async def send() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.head(f"/v1/requesters/{ALICE.address}/secrets/{n}") for n in names)
            )
        return [answer.status_code for answer in answers]

    return asyncio.run(send())


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": UNAVAILABLE_DETAIL,
    }
    assert VALUE.decode() not in response.text


def _counts(engine: Engine, name: str) -> tuple[int, int, int]:
    """(versions of the secret, audit entries, recorded request nonces)."""
    with reading(engine) as connection:  # a reader: it must not queue for the write lock
        versions = connection.execute(
            select(func.count()).select_from(secrets).where(secrets.c.name == name)
        ).scalar_one()
        entries = connection.execute(select(func.count()).select_from(audit_log)).scalar_one()
        nonces = connection.execute(select(func.count()).select_from(request_nonces)).scalar_one()
    return int(versions), int(entries), int(nonces)


def _audit_verifies(url: str, entries: int) -> None:
    """`confide audit verify`, as an operator would run it after the incident."""
    proc = run_cli("audit", "verify", "--db", url, "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["ok"] is True and document["entries"] == entries


def test_a_locked_sqlite_database_is_503_and_the_resigned_retry_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="confide.sms")
    db = tmp_path / "sms.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url, busy_timeout_ms=150)  # a locked database answers quickly
    with running_sms(tmp_path / "sms", url, engine=engine) as base:
        transport = RecordingTransport()
        lock = sqlite3.connect(db, isolation_level=None)

        def wait(seconds: float) -> None:  # the client's back-off: the lock goes meanwhile
            waits.append(seconds)
            if lock.in_transaction:
                lock.execute("COMMIT")

        waits: list[float] = []
        client = SmsClient(base, wallet=ALICE, transport=transport, sleep=wait)
        assert client.push_requester_secret("warm", b"w") == 1
        before = _counts(engine, "k1")

        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        started = time.monotonic()
        _assert_unavailable(_signed_put(base, "k1"))
        assert time.monotonic() - started < 5  # the engine's busy timeout, not the default
        assert _head(base, "k1") == 404  # reads go on (WAL); nothing was written
        assert _counts(engine, "k1") == before

        transport.nonces.clear()
        assert client.push_requester_secret("k1", VALUE) == 1  # 503, wait (unlock), 201
        assert waits == [1.0]  # Retry-After honoured
        assert len(transport.nonces) == 2 and len(set(transport.nonces)) == 2  # re-signed
        assert _head(base, "k1") == 200
        versions, entries, _ = _counts(engine, "k1")
        assert (versions, entries) == (1, before[1] + 1)  # once, and audited once
        lock.close()
    _audit_verifies(url, entries)
    unavailable = [r for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(unavailable) == 2  # once per refused request
    assert "database locked (OperationalError SQLITE_BUSY) on PUT" in unavailable[0].getMessage()
    assert not any(
        VALUE.decode() in r.getMessage() or "INSERT" in r.getMessage() for r in caplog.records
    )


def test_the_client_gives_up_after_its_retries(tmp_path: Path) -> None:
    db = tmp_path / "sms.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url, busy_timeout_ms=50)
    with running_sms(tmp_path / "sms", url, engine=engine) as base:
        waits: list[float] = []
        client = SmsClient(base, wallet=ALICE, retries=2, sleep=waits.append)
        client.info()
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(
                Exception,
                match=r"the sms is unavailable: the database is "
                r"unavailable .* \(503 on each of 3 attempts\)",
            ):
                client.push_requester_secret("k1", VALUE)
        finally:
            lock.close()
        assert waits == [1.0, 1.0]
        assert _head(base, "k1") == 404


def _with_options(url: str, option: str) -> str:
    """``url`` with one more libpq ``-c`` option (next to the fixture's search_path)."""
    return url.replace("options=-csearch_path%3D", f"options=-c{option}%20-csearch_path%3D")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_failure_mid_transaction_leaves_nothing_on_postgresql(
    tmp_path: Path, database_url: str
) -> None:
    """The secret row is inserted, then the audit append waits for its lock and times out:
    the whole transaction (nonce, secret, audit entry) rolls back."""
    import psycopg

    from confide.db.audit import _LOCK_KEY

    url = _with_options(database_url, "lock_timeout%3D300")
    engine = make_engine(url)
    with running_sms(tmp_path / "sms", url, engine=engine) as base:
        client = SmsClient(base, wallet=ALICE, sleep=lambda _s: holder.close())
        client.push_requester_secret("warm", b"w")
        before = _counts(engine, "k1")
        plain = database_url.split("?", maxsplit=1)[0]
        holder = psycopg.connect(plain, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))  # the audit log's lock
        _assert_unavailable(_signed_put(base, "k1"))
        assert _counts(engine, "k1") == before  # no secret row, no entry, no nonce
        assert _head(base, "k1") == 404
        assert client.push_requester_secret("k1", VALUE) == 1  # the wait releases the lock
        assert _counts(engine, "k1")[:2] == (1, before[1] + 1)
    engine.dispose()
    _audit_verifies(database_url, before[1] + 1)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_unreachable_postgresql_is_503_until_it_is_back(
    tmp_path: Path, database_url: str
) -> None:
    parsed = make_url(database_url)
    forwarder = TcpForwarder(parsed.host or "127.0.0.1", parsed.port or 5432)
    through = parsed.set(host="127.0.0.1", port=forwarder.port)
    url = through.render_as_string(hide_password=False)
    try:
        with running_sms(tmp_path / "sms", url) as base:
            client = SmsClient(base, wallet=ALICE, retries=0)
            assert client.push_requester_secret("before", b"v") == 1

            forwarder.cut()  # the database host is gone: pooled connections die with it
            _assert_unavailable(_signed_put(base, "during"))
            # HEAD checks sent at once are read in batches: each check of a failed batch
            # is answered 503 (none hangs, none is told 404), and after the cut each is
            # read again. A secret pushed through this sms is answered from memory.
            names = ["before", *(f"missing-{i}" for i in range(40))]
            assert _heads(base, names) == [200] + [503] * 40
            forwarder.restore()
            assert _heads(base, names) == [200] + [404] * 40
            assert client.push_requester_secret("during", VALUE) == 1  # a fresh request
            assert _head(base, "during") == 200

            # Cut and healed with no request in between: every pooled connection is stale.
            # The checkout check finds them closed and replaces them: the first succeeds.
            forwarder.cut()
            forwarder.restore()
            assert _signed_put(base, "after").status_code == 201
    finally:
        forwarder.close()
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            entries = verify_chain(connection)
        assert _counts(engine, "during")[0] == 1
    finally:
        engine.dispose()
    _audit_verifies(database_url, entries)
    assert entries == 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_postgresql_that_stops_answering_is_503_within_seconds(
    tmp_path: Path, database_url: str
) -> None:
    """Connections stay open and nothing comes back (a stopped server, a hung proxy): a
    push and HEAD checks are answered 503 within seconds, not held until the client
    gives up; once the database answers again, so does the sms."""
    parsed = make_url(database_url)
    forwarder = TcpForwarder(parsed.host or "127.0.0.1", parsed.port or 5432)
    backstop = threading.Timer(30, forwarder.cut)  # without the bounds: fail, not hang
    backstop.start()
    url = parsed.set(host="127.0.0.1", port=forwarder.port).render_as_string(False)
    try:
        with running_sms(tmp_path / "sms", url) as base:
            client = SmsClient(base, wallet=ALICE, retries=0)
            assert client.push_requester_secret("before", b"v") == 1
            forwarder.silence()
            start = time.monotonic()
            _assert_unavailable(_signed_put(base, "during"))
            assert time.monotonic() - start < SILENT_BOUND_S
            start = time.monotonic()
            assert _heads(base, [f"missing-{i}" for i in range(5)]) == [503] * 5
            assert time.monotonic() - start < SILENT_BOUND_S
            forwarder.cut()  # the server is back: what it had held open ends
            forwarder.restore()
            assert client.push_requester_secret("during", VALUE) == 1
            assert _head(base, "during") == 200
    finally:
        backstop.cancel()
        forwarder.close()


def test_a_restart_loses_nothing_acknowledged(tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "sms"
    with running_sms(home, database_url) as base:
        client = SmsClient(base, wallet=ALICE)
        acknowledged = {name: client.push_requester_secret(name, VALUE) for name in ("a", "b")}
        acknowledged["a"] = client.push_requester_secret("a", VALUE + b"2", update=True)
    assert acknowledged == {"a": 2, "b": 1}
    with running_sms(home, database_url) as base:  # a new server on the same database
        assert _head(base, "a") == 200 and _head(base, "b") == 200
        client = SmsClient(base, wallet=ALICE)
        assert client.push_requester_secret("a", b"3", update=True) == 3
    _audit_verifies(database_url, 4)


def test_a_write_waiting_for_the_lock_does_not_stall_the_server(tmp_path: Path) -> None:
    """Database work runs on the sms's own threads: while a push waits for a lock another
    process holds, the event loop still answers what needs no database."""
    db = tmp_path / "sms.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url, busy_timeout_ms=3000)
    with running_sms(tmp_path / "sms", url, engine=engine) as base:
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        outcome: list[int] = []
        push = threading.Thread(target=lambda: outcome.append(_signed_put(base, "k1").status_code))
        push.start()
        time.sleep(0.3)  # the push is waiting for the lock
        started = time.monotonic()
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/info", timeout=10).status_code == 200
        answered = time.monotonic() - started
        assert push.is_alive()  # still waiting: the answers did not wait for it
        lock.execute("COMMIT")
        push.join(timeout=10)
        lock.close()
    assert answered < 1.5, answered
    assert outcome == [201]  # the lock went in time: the push then succeeded


def test_an_attestation_while_sqlite_is_locked_is_503_and_its_retry_is_granted(
    tmp_path: Path,
) -> None:
    """The grant's transaction (a group commit) meets another process's write lock: the
    attestation is answered 503 with nothing recorded and its nonce still live, so the
    client's retry of the same request is granted, and audited once."""
    db = tmp_path / "sms.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url, busy_timeout_ms=150)
    with world(tmp_path, url, engine=engine) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        lock = sqlite3.connect(db, isolation_level=None)
        waits: list[float] = []

        def wait(seconds: float) -> None:  # the client's back-off: the lock goes meanwhile
            waits.append(seconds)
            lock.execute("COMMIT")

        before = _audited(engine)
        attester = SimAttester(w.platform, APP)

        class LockingAttester:
            """Takes the write lock once the challenge is issued, before the attestation."""

            tee = attester.tee

            def evidence(self, report_data: bytes) -> Evidence:
                lock.execute("BEGIN EXCLUSIVE")
                return attester.evidence(report_data)

        released = attest_and_open(
            SmsClient(w.base, sleep=wait),
            LockingAttester(),
            EnclaveKeys.generate(),
            sms_key=sms_key(w.owner),
            target=w.target(),
            service="app",
            worker="host-1",
        )
        lock.close()
        assert waits == [1.0]  # one 503 (Retry-After: 1), then granted
        assert released.config["environment"]["API_KEY"] == API_KEY
        after = _audited(engine)
        assert after.get("attest.granted", 0) == before.get("attest.granted", 0) + 1
        assert after.get("attest.refused", 0) == 0
        # and the output volume's key, made by the grant, stored once
        assert after["secret.write"] == before["secret.write"] + 1


def _audited(engine: Engine) -> dict[str, int]:
    with reading(engine) as connection:
        query = select(audit_log.c.action, func.count()).group_by(audit_log.c.action)
        return {str(action): int(count) for action, count in connection.execute(query)}
