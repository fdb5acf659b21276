"""The sms over real HTTP on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import httpx
import pytest

from confide.client.sms import SmsClient
from confide.crypto.info_proof import jwks_key, request_audience
from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.errors import AuthError, SecretError
from tests.integration.sms_server import audience_of, running_sms

ALICE = Wallet.generate()
BOB = Wallet.generate()


def _signed_put(base: str, wallet: Wallet, path: str, body: bytes, audience: str) -> httpx.Response:
    headers = sign_request(
        wallet,
        audience=audience,
        method="PUT",
        path=path,
        body=body,
        content_type="application/octet-stream",
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    return httpx.put(base + path, content=body, headers=headers)


def test_push_check_and_refusals(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        info = httpx.get(base + "/v1/info").json()
        # the deployment and the key the info proves it holds
        assert info["audience"] == request_audience("test", jwks_key(info["jwks"]))
        assert info["allow_sim"] is False
        client = SmsClient(base, wallet=ALICE, trust_dir=tmp_path / "trust")
        assert client.push_requester_secret("x1", b"value-1") == 1
        assert client.requester_secret_exists(ALICE.address.upper().replace("0X", "0x"), "x1")
        assert not client.requester_secret_exists(ALICE.address, "x2")
        head = httpx.head(f"{base}/v1/requesters/{ALICE.address}/secrets/x1")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "0"
        with pytest.raises(SecretError, match=r"409.*use --update"):
            client.push_requester_secret("x1", b"again")
        assert client.push_requester_secret("x1", b"value-2", update=True) == 2

        path = f"/v1/requesters/{ALICE.address}/secrets/x3"
        unsigned = httpx.put(base + path, content=b"v")
        assert unsigned.status_code == 401
        assert unsigned.headers["content-type"] == "application/problem+json"
        assert "not signed" in unsigned.json()["detail"]
        other_deployment = _signed_put(base, ALICE, path, b"v", "sms/elsewhere")
        assert other_deployment.status_code == 401
        assert "does not match" in other_deployment.json()["detail"]
        bob_writes = _signed_put(base, BOB, path, b"v", audience_of(base))
        assert bob_writes.status_code == 403
        for bad in ("a%2Fb", "x%00", "%C3%A9", "x1';DROP"):
            response = _signed_put(
                base,
                ALICE,
                f"/v1/requesters/{ALICE.address}/secrets/{bad}",
                b"v",
                audience_of(base),
            )
            assert response.status_code in (400, 404), bad
        assert "Traceback" not in unsigned.text


def test_replay_is_refused_even_after_a_restart(tmp_path: Path, database_url: str) -> None:
    path = f"/v1/requesters/{ALICE.address}/secrets/r1"
    body = b"value"
    with running_sms(tmp_path / "sms", database_url) as base:
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
        assert httpx.put(base + path, content=body, headers=headers).status_code == 201
        replay = httpx.put(base + path + "?update=true", content=body, headers=headers)
        assert replay.status_code == 401  # the query changed: the signature no longer matches
        replay = httpx.put(base + path, content=body, headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    with running_sms(tmp_path / "sms", database_url) as base:  # a restart
        again = httpx.put(base + path, content=body, headers=headers)
        assert again.status_code == 401 and "replayed" in again.json()["detail"]


def test_oversized_body_refused_before_it_is_read(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        port = int(base.rsplit(":", 1)[1])
        path = f"/v1/requesters/{ALICE.address}/secrets/big"
        now = int(time.time())
        signed = sign_request(ALICE, audience="test", method="PUT", path=path, now=now)
        head = "".join(f"{name}: {value}\r\n" for name, value in signed.items())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(
                f"PUT {path} HTTP/1.1\r\n"
                f"Host: x\r\n{head}Content-Length: 100000000\r\n\r\n".encode()
            )  # the 100 MB body is never sent: the answer must come anyway
            answer = b""
            while b"}" not in answer:  # headers, then the problem+json body
                chunk = raw.recv(4096)
                if not chunk:
                    break
                answer += chunk
        answer_text = answer.decode()
        assert answer_text.startswith("HTTP/1.1 413")
        assert "at most 65536 bytes" in answer_text
        client = SmsClient(base, wallet=ALICE)
        with pytest.raises(SecretError, match="413"):
            client.push_requester_secret("big", b"x" * 65537)


def test_changed_sms_key_is_refused_after_first_contact(tmp_path: Path, database_url: str) -> None:
    trust = tmp_path / "trust"
    with running_sms(tmp_path / "sms-a", database_url) as first:
        SmsClient(first, wallet=ALICE, trust_dir=trust).info()  # pins sms-a's keys
        SmsClient(first, wallet=ALICE, trust_dir=trust).info()  # same keys: fine
    (pin,) = trust.iterdir()
    # Another sms (its own database: one database refuses a second token key)...
    with running_sms(tmp_path / "sms-b", f"sqlite:///{tmp_path / 'b.db'}") as second:
        url_hash = hashlib.sha256(second.encode()).hexdigest()[:16]
        pin.rename(trust / f"sms-{url_hash}.json")  # ...answering where sms-a was pinned
        with pytest.raises(AuthError, match="differ from the ones pinned"):
            SmsClient(second, wallet=ALICE, trust_dir=trust).info()
        # (a pin kept under the URL as typed, as earlier versions named it, still holds)
        assert len(list(trust.iterdir())) == 1
        # Another spelling of the same address is the same pin, not a first contact.
        spelled = second.replace("http://", "HTTP://") + "/"
        with pytest.raises(AuthError, match="differ from the ones pinned"):
            SmsClient(spelled, wallet=ALICE, trust_dir=trust).info()
        assert len(list(trust.iterdir())) == 1


SESSION_TEXT = """\
name: s1
version: "1"
predecessor: PRED
services:
  - {name: app, measurements: ["sim:$SIM"], command: run}
secrets:
  - {name: k, kind: key}
"""


def test_sessions_over_http(tmp_path: Path, database_url: str) -> None:
    sim = {"SIM": "ab" * 32}
    with running_sms(tmp_path / "sms", database_url) as base:
        alice = SmsClient(base, wallet=ALICE)
        created = alice.create_session(SESSION_TEXT.replace("PRED", "null"), sim, "s.yml")
        assert created["owner"] == ALICE.address and created["secrets"][0]["value"] is None
        assert alice.session(ALICE.address, "s1")["hash"] == created["hash"]
        with pytest.raises(SecretError, match="409"):
            alice.create_session(SESSION_TEXT.replace("PRED", "null"), sim, "s.yml")
        with pytest.raises(SecretError, match=r"400.*s.yml:5: .*\$SIM is not set"):
            alice.create_session(SESSION_TEXT.replace("PRED", "null"), {}, "s.yml")
        updated = alice.update_session(
            ALICE.address,
            "s1",
            SESSION_TEXT.replace("PRED", created["hash"]).replace("run", "run2"),
            sim,
            "s.yml",
        )
        history = alice.session_history(ALICE.address, "s1")["history"]
        assert [h["hash"] for h in history] == [created["hash"], updated["hash"]]
        with pytest.raises(AuthError, match="403"):
            SmsClient(base, wallet=BOB).session(ALICE.address, "s1")
