"""Clients trust an sms only when it proves it holds the key it presents."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from confide.client.sms import SmsClient
from confide.crypto.info_proof import check_info_proof
from confide.errors import AuthError
from tests.integration.sms_server import running_sms


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

        client = SmsClient(base, trust_dir=tmp_path / "trust",
                           transport=httpx.MockTransport(impostor))  # fmt: skip
        with pytest.raises(AuthError, match="did not prove"):
            client.info()
        assert not (tmp_path / "trust").exists() or not any((tmp_path / "trust").iterdir())
        real = SmsClient(base, trust_dir=tmp_path / "trust")
        assert real.info()["audience"] == "sms/test"
