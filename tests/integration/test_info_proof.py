"""Clients trust an sms only when it proves it holds the key it presents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from confide.attestation.token import TokenIssuer
from confide.client.sms import SmsClient
from confide.crypto.info_proof import INFO_LABEL, check_info_proof, info_message, request_audience
from confide.crypto.requests import sign_request
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.errors import AuthError
from tests.integration.sms_server import audience_of, running_sms


def test_info_is_signed_over_the_clients_challenge(tmp_path: Path) -> None:
    with running_sms(tmp_path / "sms", f"sqlite:///{tmp_path / 'db'}") as base:
        challenge = bytes(range(32))
        info = httpx.get(f"{base}/v1/info?challenge={challenge.hex()}").json()
        check_info_proof(info, challenge)
        with pytest.raises(AuthError, match="did not prove"):
            check_info_proof(info, bytes(32))  # a proof for another challenge
        with pytest.raises(AuthError, match="did not prove"):
            check_info_proof({**info, "audience": "sms/other"}, challenge)  # edited info
        assert httpx.get(f"{base}/v1/info?challenge=zz").status_code == 400
        assert "proof" not in httpx.get(f"{base}/v1/info").json()

        # An impostor replays what the real sms once answered (its JWKS, a valid proof for
        # an old challenge): the client refuses it, before pinning or signing anything.
        def impostor(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=info)

        client = SmsClient(
            base, trust_dir=tmp_path / "trust", transport=httpx.MockTransport(impostor)
        )
        with pytest.raises(AuthError, match="did not prove"):
            client.info()
        assert not (tmp_path / "trust").exists() or not any((tmp_path / "trust").iterdir())
        real = SmsClient(base, trust_dir=tmp_path / "trust")
        assert real.info()["audience"].startswith("sms/test/")


def test_a_request_signed_for_one_sms_is_refused_by_another_of_the_same_deployment(
    tmp_path: Path,
) -> None:
    """A malicious sms that names an honest one's deployment id collects requests signed
    for it; the audience names the key the client saw proven, so they are useless at the
    honest sms (which holds another key), however the ids are chosen."""
    wallet = Wallet.generate()
    path = f"/v1/requesters/{wallet.address}/secrets/db-password"

    def put(base: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.put(base + path, content=b"v", headers=headers)

    with (
        running_sms(tmp_path / "honest", f"sqlite:///{tmp_path / 'a.db'}", "prod") as honest,
        running_sms(tmp_path / "spoof", f"sqlite:///{tmp_path / 'b.db'}", "prod") as spoof,
    ):
        assert audience_of(honest).startswith("sms/prod/")
        assert audience_of(spoof) != audience_of(honest)
        headers = sign_request(
            wallet,
            audience=audience_of(spoof),
            method="PUT",
            path=path,
            body=b"v",
            content_type="application/octet-stream",
            now=int(time.time()),
        )
        headers["content-type"] = "application/octet-stream"
        replayed = put(honest, headers)
        assert replayed.status_code == 401 and "does not match" in replayed.json()["detail"]
        assert put(spoof, headers).status_code == 201  # where it was meant to go
        client = SmsClient(honest, wallet=wallet, trust_dir=tmp_path / "trust")
        assert client.push_requester_secret("db-password", b"mine") == 1  # nothing squatted


def test_the_client_signs_only_for_the_key_it_pinned(tmp_path: Path) -> None:
    """An sms that proves its own key but names another audience (another sms's) is
    refused before the client signs anything for it."""
    tokens = TokenIssuer("sms", SigningKey.generate())
    elsewhere = request_audience("prod", SigningKey.generate().public_bytes())

    def lying(request: httpx.Request) -> httpx.Response:
        info: dict[str, Any] = {
            "deployment_id": "prod",
            "audience": elsewhere,
            "jwks": tokens.jwks(),
        }
        challenge = bytes.fromhex(request.url.params["challenge"])
        info["proof"] = tokens.sign_blob(INFO_LABEL, info_message(challenge, info)).hex()
        return httpx.Response(200, json=info)

    client = SmsClient(
        "http://127.0.0.1:9",
        wallet=Wallet.generate(),
        trust_dir=tmp_path,
        transport=httpx.MockTransport(lying),
    )
    with pytest.raises(AuthError, match=r"names audience .*refusing to sign"):
        client.push_requester_secret("x1", b"v")
    assert list(tmp_path.iterdir()) == []  # and its key is not pinned either
