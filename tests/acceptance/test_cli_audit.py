"""``confide audit verify|show`` as an operator types them, on SQLite and PostgreSQL.

The chain is made by the sms's own stores (secret writes, an update, a session with a
secret); tampering is done with plain SQL, as someone with database access would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, update

from confide.db import make_engine
from confide.db.audit import entry_hash
from confide.db.schema import audit_log
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig
from confide.sms.session_document import parse_session
from tests.conftest import assert_refusal, run_cli
from tests.integration.sms_server import free_port

OWNER = "0x" + "ab" * 20
NOW = 1_800_000_000
SECRET = "AUDIT-SECRET-VALUE-7"
SESSION = f"""\
name: audited
version: "1"
services:
  - name: app
    measurements: ["sim:{"cd" * 32}"]
    command: python3 /app/app.py
secrets:
  - {{name: api_key, value: "{SECRET}-SESSION"}}
security: {{tolerate: [simulation]}}
"""


def make_chain(home: Path, url: str) -> int:
    """Five audit entries written by the sms's stores; the number of entries."""
    sms = Sms(SmsConfig(home=home, db_url=url, deployment_id="test"))
    try:
        for index, name in enumerate(("x1", "x2")):
            ref = SecretRef(OWNER, "requester", name)
            sms.secrets.put(ref, SECRET.encode(), update=False, now=NOW + index)
        sms.secrets.put(
            SecretRef(OWNER, "requester", "x1"), b"v2-" + SECRET.encode(), update=True, now=NOW + 2
        )
        sms.sessions.create(OWNER, parse_session(SESSION, {}), NOW + 3)
    finally:
        sms.engine.dispose()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return len(connection.execute(select(audit_log.c.seq)).all())
    finally:
        engine.dispose()


def _cli_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CONFIDE_HOME": str(tmp_path / "home")}


def test_verify_and_show_a_chain_made_by_the_sms(tmp_path: Path, database_url: str) -> None:
    count = make_chain(tmp_path / "sms", database_url)
    assert count >= 5  # 3 secret writes, the session, its secret
    env, db = _cli_env(tmp_path), ("--db", database_url)

    verified = run_cli("audit", "verify", *db, env=env)
    assert verified.returncode == 0, verified.stderr
    lines = verified.stdout.splitlines()
    assert lines[0] == f"audit log verified: {count} entries"
    head = re.fullmatch(rf"head ({count - 1}):([0-9a-f]{{64}})", lines[1])
    assert head is not None

    as_json = run_cli("audit", "verify", *db, "--json", env=env)
    document = json.loads(as_json.stdout)  # exactly one JSON document
    assert document == {
        "ok": True,
        "entries": count,
        "error": None,
        "head": {"seq": count - 1, "hash": head.group(2)},
    }
    expected = run_cli(
        "audit", "verify", *db, "--expect", f"{head.group(1)}:{head.group(2)}", env=env
    )
    assert expected.returncode == 0 and "has the expected hash" in expected.stdout

    table = run_cli("audit", "show", *db, env=env)
    assert table.returncode == 0, table.stderr
    for needle in (
        "secret.write",
        "session.write",
        "requester/x1",
        f"{OWNER}/audited",
        "2027-01-15T08:00:00Z",
        '{"version": 2}',
    ):
        assert needle in table.stdout, needle
    listed = json.loads(run_cli("audit", "show", *db, "--json", env=env).stdout)
    assert [e["seq"] for e in listed] == list(range(count))
    assert set(listed[0]) == {
        "seq",
        "time",
        "at",
        "actor",
        "action",
        "subject",
        "detail",
        "prev_hash",
        "hash",
    }
    assert listed[0]["time"] == "2027-01-15T08:00:00Z" and listed[0]["actor"] == OWNER
    assert listed[-1]["hash"] == head.group(2)
    for output in (table.stdout, json.dumps(listed), verified.stdout):
        assert SECRET not in output  # entries name secrets and versions, never a value

    window = json.loads(
        run_cli("audit", "show", *db, "--since", "2", "--limit", "2", "--json", env=env).stdout
    )
    assert [e["seq"] for e in window] == [2, 3]
    assert (
        json.loads(run_cli("audit", "show", *db, "--since", "99", "--json", env=env).stdout) == []
    )
    empty = run_cli("audit", "show", *db, "--since", "99", env=env)
    assert (empty.returncode, empty.stdout.strip()) == (0, "no audit log entries from 99 on")


def _alter_detail(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 2).values(detail='{"version": 9}')
        )


def _delete_middle(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(audit_log).where(audit_log.c.seq == 2))


def _break_link(engine: Engine) -> None:
    """Entry 3 re-hashed over a made-up predecessor: its own hash matches, its link not."""
    with engine.begin() as connection:
        row = connection.execute(select(audit_log).where(audit_log.c.seq == 3)).one()
        prev = "f" * 64
        digest = entry_hash(
            prev, 3, row.at, row.actor, row.action, row.subject, json.loads(row.detail)
        )
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(prev_hash=prev, hash=digest)
        )


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_alter_detail, "audit log entry 2 was altered"),
        (_delete_middle, "audit log entry 2 is missing"),
        (_break_link, "audit log entry 3 does not follow entry 2"),
    ],
)
def test_tampering_is_named(
    tmp_path: Path, database_url: str, tamper: Callable[[Engine], None], message: str
) -> None:
    make_chain(tmp_path / "sms", database_url)
    engine = make_engine(database_url)
    try:
        tamper(engine)
    finally:
        engine.dispose()
    env, db = _cli_env(tmp_path), ("--db", database_url)
    assert_refusal(run_cli("audit", "verify", *db, env=env), message)
    as_json = run_cli("audit", "verify", *db, "--json", env=env)
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["ok"] is False and message in document["error"]
    assert document["entries"] >= 4 and document["head"]["seq"] >= 4


def _rewrite_from(engine: Engine, seq: int) -> None:
    """A consistent forgery: entry ``seq`` altered and every later hash recomputed."""
    with engine.begin() as connection:
        rows = connection.execute(
            select(audit_log).where(audit_log.c.seq >= seq).order_by(audit_log.c.seq)
        ).all()
        connection.execute(delete(audit_log).where(audit_log.c.seq >= seq))
        prev = rows[0].prev_hash
        for row in rows:
            detail = {"version": 99} if row.seq == seq else json.loads(row.detail)
            digest = entry_hash(prev, row.seq, row.at, row.actor, row.action, row.subject, detail)
            connection.execute(
                audit_log.insert().values(
                    seq=row.seq,
                    prev_hash=prev,
                    hash=digest,
                    at=row.at,
                    actor=row.actor,
                    action=row.action,
                    subject=row.subject,
                    detail=json.dumps(detail),
                )
            )
            prev = digest


def test_truncation_and_rewrite_need_the_noted_head(tmp_path: Path, database_url: str) -> None:
    count = make_chain(tmp_path / "sms", database_url)
    env, db = _cli_env(tmp_path), ("--db", database_url)
    noted = json.loads(run_cli("audit", "verify", *db, "--json", env=env).stdout)["head"]
    expect = ("--expect", f"{noted['seq']}:{noted['hash'].upper()}")  # any letter case

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:  # the last two entries removed
            connection.execute(delete(audit_log).where(audit_log.c.seq >= count - 2))
        # What is left is a valid chain: only the noted head tells.
        assert run_cli("audit", "verify", *db, env=env).returncode == 0
        assert_refusal(
            run_cli("audit", "verify", *db, *expect, env=env),
            f"audit log entry {count - 1} is missing",
            f"the log ends at entry {count - 3}",
        )
        _rewrite_from(engine, 1)
    finally:
        engine.dispose()
    assert run_cli("audit", "verify", *db, env=env).returncode == 0
    early = ("--expect", f"1:{noted['hash']}")  # any entry can be noted, not only the head
    assert_refusal(run_cli("audit", "verify", *db, *early, env=env), "audit log entry 1 has hash")
    document = json.loads(run_cli("audit", "verify", *db, *expect, "--json", env=env).stdout)
    assert document["ok"] is False and "is missing" in document["error"]
    bad = run_cli("audit", "verify", *db, "--expect", "12:nothex", env=env)
    assert bad.returncode == 2 and "SEQ:HASH" in bad.stderr


def _fingerprint(path: Path) -> dict[str, str]:
    """The database file and its WAL: content only (a reader of a WAL database may leave
    an empty -wal file and the -shm index behind)."""
    names = (path, path.with_name(path.name + "-wal"))
    return {
        p.name: hashlib.sha256(p.read_bytes() if p.exists() else b"").hexdigest() for p in names
    }


def test_default_database_and_read_only(tmp_path: Path) -> None:
    """Without --db, audit reads the database `confide serve sms` uses, and writes nothing."""
    env = _cli_env(tmp_path)
    default = tmp_path / "home" / "sms" / "sms.db"
    missing = run_cli("audit", "verify", env=env)
    assert_refusal(missing, "no sms database at", str(default))
    assert not default.exists()  # refused, not created

    default.parent.mkdir(parents=True)
    count = make_chain(default.parent, f"sqlite:///{default}")
    before = _fingerprint(default)
    verified = run_cli("audit", "verify", "--json", env=env)
    assert json.loads(verified.stdout)["entries"] == count
    assert run_cli("audit", "show", env=env).returncode == 0
    assert _fingerprint(default) == before


def test_refusals_name_the_database(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    nowhere = tmp_path / "nowhere.db"
    for command in ("verify", "show"):
        proc = run_cli("audit", command, "--db", f"sqlite:///{nowhere}", env=env)
        assert_refusal(proc, "no sms database at", str(nowhere))
        as_json = run_cli("audit", command, "--db", f"sqlite:///{nowhere}", "--json", env=env)
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["ok"] is False
    assert not nowhere.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    assert_refusal(
        run_cli("audit", "show", "--db", f"sqlite:///{garbage}", env=env),
        "cannot read the database",
        "file is not a database",
    )
    closed = f"postgresql://confide:hunter2@127.0.0.1:{free_port()}/test"
    for command in ("verify", "show"):
        proc = run_cli("audit", command, "--db", closed, env=env)
        assert_refusal(proc, "cannot reach the database", "Connection refused")
        assert "hunter2" not in proc.stderr
    assert_refusal(
        run_cli("audit", "verify", "--db", "mysql://x/y", env=env), "unsupported database URL"
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_schema_without_an_sms(tmp_path: Path, database_url: str) -> None:
    """A reachable database (here an empty private schema) that holds no sms."""
    proc = run_cli("audit", "verify", "--db", database_url, env=_cli_env(tmp_path))
    assert_refusal(proc, "no sms database at", "no audit_log table")
