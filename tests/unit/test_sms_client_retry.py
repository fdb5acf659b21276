"""SmsClient's retries on 503: against a small real Starlette app on loopback that answers
503 twice, then accepts; each attempt must be signed anew (fresh nonce and timestamp)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.attestation.token import TokenIssuer
from confide.client.sms import RETRY_CAP_SECONDS, SmsClient
from confide.crypto.info_proof import INFO_LABEL, info_message, request_audience
from confide.crypto.requests import canonical_query, verify_request
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.db.availability import UNAVAILABLE_DETAIL
from confide.errors import ConfideError
from tests.integration.sms_server import free_port

ALICE = Wallet.generate()
TOKENS = TokenIssuer("sms", SigningKey.generate())
AUDIENCE = request_audience("unit", TOKENS.public_key())


class Flaky:
    """Answers 503 (with ``retry_after``) ``failures`` times, then 201; checks signatures."""

    def __init__(self, failures: int, retry_after: str | None) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.nonces: list[str] = []
        self.timestamps: list[int] = []

    async def info(self, request: Request) -> Response:
        """What the sms says of itself, signed over the client's challenge (as the sms)."""
        info: dict[str, Any] = {
            "audience": AUDIENCE,
            "deployment_id": "unit",
            "jwks": TOKENS.jwks(),
        }
        challenge = bytes.fromhex(request.query_params["challenge"])
        info["proof"] = TOKENS.sign_blob(INFO_LABEL, info_message(challenge, info)).hex()
        return JSONResponse(info)

    async def put(self, request: Request) -> Response:
        body = await request.body()
        signed = verify_request(
            request.headers,
            audience=AUDIENCE,
            method="PUT",
            path=request.url.path,
            query=canonical_query(request.query_params.multi_items()),
            content_type=request.headers.get("content-type", ""),
            body=body,
            now=int(time.time()),
        )
        self.nonces.append(signed.nonce)
        self.timestamps.append(signed.timestamp)
        if len(self.nonces) <= self.failures:
            headers = {} if self.retry_after is None else {"retry-after": self.retry_after}
            problem = {
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": UNAVAILABLE_DETAIL,
            }
            return JSONResponse(problem, status_code=503, headers=headers)
        return JSONResponse({"name": request.path_params["name"], "version": 1}, status_code=201)


@contextmanager
def serving(flaky: Flaky) -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/info", flaky.info, methods=["GET"]),
            Route("/v1/requesters/{address}/secrets/{name}", flaky.put, methods=["PUT"]),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_two_503s_then_success_with_three_signatures() -> None:
    flaky = Flaky(failures=2, retry_after="0")
    waits: list[float] = []
    clock = iter(range(int(time.time()), int(time.time()) + 100))
    with serving(flaky) as base:
        client = SmsClient(base, wallet=ALICE, sleep=waits.append, clock=lambda: next(clock))
        assert client.push_requester_secret("x1", b"value") == 1
    assert len(flaky.nonces) == 3 and len(set(flaky.nonces)) == 3  # re-signed each time
    assert flaky.timestamps == sorted(set(flaky.timestamps))  # a fresh timestamp each time
    assert waits == [0.25, 0.5]  # Retry-After: 0 does not stop the back-off


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("2", [2.0, 2.0, 2.0]),
        ("3600", [RETRY_CAP_SECONDS] * 3),
        (None, [0.25, 0.5, 1.0]),
        ("Wed, 21 Oct 2015 07:28:00 GMT", [0.25, 0.5, 1.0]),
    ],
)
def test_retry_after_is_honoured_capped_and_bounded(
    retry_after: str | None, expected: list[float]
) -> None:
    flaky = Flaky(failures=10, retry_after=retry_after)
    waits: list[float] = []
    with serving(flaky) as base:
        client = SmsClient(base, wallet=ALICE, sleep=waits.append)
        with pytest.raises(ConfideError) as refused:
            client.push_requester_secret("x1", b"value")
    assert str(refused.value) == (
        "the sms is unavailable: the database is unavailable (locked or unreachable): retry "
        "(503 on each of 4 attempts)"
    )
    assert waits == expected
    assert len(flaky.nonces) == 4 and len(set(flaky.nonces)) == 4
