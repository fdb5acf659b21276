"""Requests to the sms end to end: replay, concurrent writes, queries, reads beside a writer,
ids, transport, wallets, JSON and session writes with their replay records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from confide.client.sms import SmsClient
from confide.crypto.envelope import KeyEncryptionKey
from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet, save_wallet
from confide.db import make_engine, reading, upgrade
from confide.db.schema import secrets as secrets_table
from confide.errors import AuthError, WalletError
from confide.jsonsafe import loads_bounded
from confide.sms.service import Sms, SmsConfig
from tests.integration.sms_server import audience_of, running_sms

ALICE = Wallet.generate()


def _put(base: str, path: str, query: str, body: bytes, audience: str) -> httpx.Response:
    headers = sign_request(
        ALICE,
        audience=audience,
        method="PUT",
        path=path,
        query=query,
        body=body,
        content_type="application/octet-stream",
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    url = base + path + (f"?{query}" if query else "")
    return httpx.put(url, content=body, headers=headers)


def test_a_refused_request_cannot_be_replayed_later(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        audience = httpx.get(base + "/v1/info").json()["audience"]
        path = f"/v1/requesters/{ALICE.address}/secrets/later"
        body = b"old body"
        headers = sign_request(
            ALICE,
            audience=audience,
            method="PUT",
            path=path,
            query="update=true",
            body=body,
            content_type="application/octet-stream",
            now=int(time.time()),
        )
        headers["content-type"] = "application/octet-stream"
        refused = httpx.put(base + path + "?update=true", content=body, headers=headers)
        assert refused.status_code == 404  # nothing to update yet
        assert _put(base, path, "", b"created", audience).status_code == 201
        replay = httpx.put(base + path + "?update=true", content=body, headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]


def test_concurrent_writes_are_conflicts_never_errors(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        audience = httpx.get(base + "/v1/info").json()["audience"]
        path = f"/v1/requesters/{ALICE.address}/secrets/busy"
        codes: list[int] = []

        def writer() -> None:
            for _ in range(5):
                codes.append(_put(base, path, "", b"v", audience).status_code)

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert codes.count(201) == 1
        assert set(codes) == {201, 409}


def test_query_order_does_not_matter_and_unknown_routes_are_problems(
    tmp_path: Path, database_url: str
) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        audience = httpx.get(base + "/v1/info").json()["audience"]
        path = f"/v1/requesters/{ALICE.address}/secrets/q"
        assert _put(base, path, "", b"v", audience).status_code == 201
        headers = sign_request(
            ALICE,
            audience=audience,
            method="PUT",
            path=path,
            query="tee=sgx&update=true",
            body=b"v2",
            content_type="application/octet-stream",
            now=int(time.time()),
        )
        headers["content-type"] = "application/octet-stream"
        sent = httpx.put(base + path + "?update=true&tee=sgx", content=b"v2", headers=headers)
        assert sent.status_code == 201  # the server signs over the canonical (sorted) query
        missing = httpx.get(base + "/v1/nowhere")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    with engine.begin() as writer:
        writer.execute(select(secrets_table.c.row_id)).all()  # holds the write lock
        started = time.monotonic()
        with reading(engine) as reader:
            reader.execute(select(secrets_table.c.row_id)).all()
        assert time.monotonic() - started < 1.0


def test_deployment_and_kek_ids_are_random_and_stable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db'}"
    first = Sms(SmsConfig(home=tmp_path / "a", db_url=url))
    again = Sms(SmsConfig(home=tmp_path / "a", db_url=url))
    other = Sms(SmsConfig(home=tmp_path / "b", db_url=f"sqlite:///{tmp_path / 'db2'}"))
    assert first.config.deployment_id == again.config.deployment_id != other.config.deployment_id
    assert first.config.deployment_id.startswith("d-")
    assert first.info()["jwks"] == again.info()["jwks"] != other.info()["jwks"]
    kek_a = KeyEncryptionKey.load_or_create(tmp_path / "k1")
    kek_b = KeyEncryptionKey.load_or_create(tmp_path / "k2")
    assert kek_a.kek_id != kek_b.kek_id


def test_client_refuses_plain_http_beyond_loopback() -> None:
    with pytest.raises(AuthError, match="use https"):
        SmsClient("http://sms.example.com:8090")
    SmsClient("http://127.0.0.1:8090")
    SmsClient("https://sms.example.com")


def test_wallet_never_replaced_without_force(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    save_wallet(path, ALICE, "pw")
    with pytest.raises(WalletError, match="already exists"):
        save_wallet(path, Wallet.generate(), "pw")
    with pytest.raises(WalletError, match="not a valid secp256k1 key"):
        Wallet.from_private_key("00" * 32)


def test_json_must_be_utf8() -> None:
    hostile = ("[" * 50 + "]" * 50).encode("utf-16")
    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeDecodeError, a ValueError
        loads_bounded(hostile, 3)


def test_session_updates_are_audited_under_the_caller(tmp_path: Path) -> None:
    from confide.db.audit import entries
    from confide.sms.session_document import parse_session
    from confide.sms.sessions import SessionStore

    sms = Sms(SmsConfig(home=tmp_path / "h", db_url=f"sqlite:///{tmp_path / 'db'}"))
    owner, editor = ALICE.address, "0x" + "b2" * 20
    text = (
        "name: s\nversion: '1'\npredecessor: PRED\naccess_policy: {read: [owner], update: "
        f"[owner, '{editor}']}}\nservices:\n  - {{name: a, measurements: ['sim:{'ab' * 32}'], "
        "command: x}\n"
    )
    store = SessionStore(sms.engine, sms.secrets)
    first = store.create(owner, parse_session(text.replace("PRED", "null"), {}), 1)
    store.update(
        editor, owner, parse_session(text.replace("PRED", first.hash).replace("x}", "y}"), {}), 2
    )
    with reading(sms.engine) as connection:
        actors = [e.actor for e in entries(connection) if e.action == "session.write"]
    assert actors == [owner, editor]


def test_a_session_write_and_its_replay_record_commit_together(
    tmp_path: Path, database_url: str
) -> None:
    text = (
        'name: s1\nversion: "1"\nservices:\n  - name: app\n    measurements: ["sim:'
        + "ab" * 32
        + '"]\n    command: ./app\n'
    )
    body = json.dumps({"yaml": text, "vars": {}, "source": "s1.yml"}).encode()
    with running_sms(tmp_path / "sms", database_url) as base:
        headers = sign_request(
            ALICE,
            audience=audience_of(base),
            method="POST",
            path="/v1/sessions",
            body=body,
            content_type="application/json",
            now=int(time.time()),
        )
        headers["content-type"] = "application/json"
        assert httpx.post(base + "/v1/sessions", content=body, headers=headers).status_code == 201
        replay = httpx.post(base + "/v1/sessions", content=body, headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
        # A refused write (409: the name is taken) uses its nonce up as well.
        again = sign_request(
            ALICE,
            audience=audience_of(base),
            method="POST",
            path="/v1/sessions",
            body=body,
            content_type="application/json",
            now=int(time.time()),
        )
        again["content-type"] = "application/json"
        assert httpx.post(base + "/v1/sessions", content=body, headers=again).status_code == 409
        replay = httpx.post(base + "/v1/sessions", content=body, headers=again)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]


def test_a_signed_head_on_a_session_or_its_tags_only_reads(
    tmp_path: Path, database_url: str
) -> None:
    """Starlette answers HEAD on every GET route; a handler that took anything but GET for
    its write let a HEAD signed by the owner replace the session (or report a tag)."""
    text = (
        'name: s1\nversion: "1"\nservices:\n  - name: app\n    measurements: ["sim:'
        + "ab" * 32
        + '"]\n    command: ./app\n    volumes: [out]\nvolumes:\n  - {name: out, mode: output}\n'
    )
    with running_sms(tmp_path / "sms", database_url) as base:
        client = SmsClient(base, wallet=ALICE, trust_dir=tmp_path / "trust")
        client.create_session(text, {}, "s1.yml")
        for path in (
            f"/v1/sessions/{ALICE.address}/s1",
            f"/v1/sessions/{ALICE.address}/s1/volumes/out/tags",
        ):
            headers = sign_request(
                ALICE,
                audience=audience_of(base),
                method="HEAD",
                path=path,
                now=int(time.time()),
            )
            head = httpx.head(base + path, headers=headers)
            assert head.status_code == 200 and head.content == b"", path
        history = client.call_json(
            "GET", f"/v1/sessions/{ALICE.address}/s1/history", None, signed=True
        )
        assert len(history["history"]) == 1
        tags = client.call_json(
            "GET", f"/v1/sessions/{ALICE.address}/s1/volumes/out/tags", None, signed=True
        )
        assert tags["tags"] == []
