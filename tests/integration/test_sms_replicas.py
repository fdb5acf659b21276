"""Replicas: two sms processes on one database, behind one URL, are one service.

The first to start records its deployment id and token key (public half) in the
database; a replica given the same KEK, token key and deployment id starts and accepts
requests signed for the first's ``/v1/info``; one with another deployment id or token
key refuses to start, naming which. As docs/sms.md shows it, with ``confide serve sms``
processes, and in process (SQLite and PostgreSQL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.errors import ConfideError
from confide.sms.service import Sms, SmsConfig
from tests.conftest import CONFIDE, assert_refusal, run_cli
from tests.integration.sms_server import audience_of, free_port, running_sms

ALICE = Wallet.generate()
KEK = "shared:" + "5a" * 32


@pytest.fixture(autouse=True)
def _shared_kek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIDE_KEK", KEK)
    monkeypatch.delenv("CONFIDE_KEK_PREVIOUS", raising=False)
    for name in ("CONFIDE_SMS_TOKEN_KEY_FILE", "CONFIDE_SMS_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)


def _put(base: str, audience: str, name: str) -> httpx.Response:
    """A secret push signed for ``audience``, sent to ``base``."""
    path = f"/v1/requesters/{ALICE.address}/secrets/{name}"
    body = b"REPLICA-VALUE"
    headers = sign_request(
        ALICE,
        audience=audience,
        method="PUT",
        path=path,
        body=body,
        content_type="application/octet-stream",
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    return httpx.put(base + path, content=body, headers=headers, timeout=30)


def _sms(home: Path, url: str, *, deployment: str = "", token_key: Path | None = None) -> Sms:
    return Sms(SmsConfig(home=home, db_url=url, deployment_id=deployment, token_key_file=token_key))


def test_a_replica_with_the_first_ones_token_key_is_the_same_service(
    tmp_path: Path, database_url: str
) -> None:
    """No --deployment anywhere: the second replica takes the id the first recorded
    (and keeps it in its own home), so audience and issuer are the same."""
    first = _sms(tmp_path / "a", database_url)
    second = _sms(tmp_path / "b", database_url, token_key=tmp_path / "a" / "token-key")
    assert second.config.deployment_id == first.config.deployment_id
    assert second.audience == first.audience
    assert second.info() == first.info()
    assert (tmp_path / "b" / "deployment-id").read_text().strip() == first.config.deployment_id
    for sms in (first, second):
        sms.engine.dispose()


def test_a_replica_with_another_token_key_refuses_to_start(
    tmp_path: Path, database_url: str
) -> None:
    _sms(tmp_path / "a", database_url, deployment="d-1").engine.dispose()
    with pytest.raises(ConfideError, match=r"served by a sms with token key [0-9a-f]{16}…"):
        _sms(tmp_path / "b", database_url, deployment="d-1")  # made its own token key
    other = tmp_path / "other-key"
    other.write_text(os.urandom(32).hex())
    with pytest.raises(ConfideError, match="--token-key FILE") as refused:
        _sms(tmp_path / "c", database_url, deployment="d-1", token_key=other)
    assert "deployment id" not in str(refused.value).split(": every replica")[0]


def test_a_replica_with_another_deployment_id_refuses_to_start(
    tmp_path: Path, database_url: str
) -> None:
    key = tmp_path / "a" / "token-key"
    _sms(tmp_path / "a", database_url, deployment="d-1").engine.dispose()
    with pytest.raises(ConfideError, match=r"deployment id d-1, but this sms has d-2") as refused:
        _sms(tmp_path / "b", database_url, deployment="d-2", token_key=key)
    assert "--deployment d-1" in str(refused.value)
    assert "token key" not in str(refused.value).split(": every replica")[0]
    with pytest.raises(ConfideError, match=r"deployment id d-1.*; and with token key"):
        _sms(tmp_path / "c", database_url, deployment="d-2")  # both differ: both named


def test_a_missing_or_malformed_token_key_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sms.db'}"
    with pytest.raises(ConfideError, match=r"cannot read the key .*nothing"):
        _sms(tmp_path / "a", url, token_key=tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.write_text("not a key")
    with pytest.raises(ConfideError, match="is not a signing key: it must hold 64 hex digits"):
        _sms(tmp_path / "a", url, token_key=bad)


def test_two_servers_on_one_database_accept_each_others_requests(
    tmp_path: Path, database_url: str
) -> None:
    key = tmp_path / "token-key"
    key.write_text(os.urandom(32).hex() + "\n")
    with (
        running_sms(tmp_path / "a", database_url, "prod", token_key=key) as first,
        running_sms(tmp_path / "b", database_url, "prod", token_key=key) as second,
    ):
        audience = audience_of(first)
        assert audience_of(second) == audience
        assert _put(second, audience, "via-b").status_code == 201  # signed for a, sent to b
        assert _put(first, audience, "via-a").status_code == 201
        for base in (first, second):
            for name in ("via-a", "via-b"):
                url = f"{base}/v1/requesters/{ALICE.address}/secrets/{name}"
                assert httpx.head(url).status_code == 200


def _serve(env: dict[str, str], port: int, *args: str) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [*CONFIDE, "serve", "sms", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            return server
        except httpx.HTTPError:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr
            time.sleep(0.05)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_documented_two_replica_setup(tmp_path: Path, database_url: str) -> None:
    """docs/sms.md's setup: one KEK, one token key file and one deployment id, given to
    two ``confide serve sms`` with homes of their own; a third with its own key refuses."""
    key = tmp_path / "token-key"
    key.write_text(os.urandom(32).hex() + "\n")
    shared = {
        **os.environ,
        "CONFIDE_KEK": KEK,
        "CONFIDE_SMS_TOKEN_KEY_FILE": str(key),
        "CONFIDE_SMS_DEPLOYMENT": "prod-1",
    }
    ports = [free_port(), free_port()]
    servers = [
        _serve({**shared, "CONFIDE_HOME": str(tmp_path / name)}, port, "--db", database_url)
        for name, port in zip(("a", "b"), ports, strict=True)
    ]
    try:
        first, second = (f"http://127.0.0.1:{port}" for port in ports)
        assert _put(second, audience_of(first), "x1").status_code == 201
        url = f"{first}/v1/requesters/{ALICE.address}/secrets/x1"
        assert httpx.head(url).status_code == 200
        env = {**shared, "CONFIDE_HOME": str(tmp_path / "c")}
        del env["CONFIDE_SMS_TOKEN_KEY_FILE"]
        refused = run_cli("serve", "sms", "--port", str(free_port()), "--db", database_url, env=env)
        assert_refusal(refused, "token key", "--token-key FILE")
        env = {**shared, "CONFIDE_HOME": str(tmp_path / "d")}
        refused = run_cli(
            "serve", "sms", "--port", "0", "--db", database_url, "--deployment", "x", env=env
        )
        assert_refusal(refused, "deployment id prod-1, but this sms has x")
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)
