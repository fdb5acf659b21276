"""The edge without the sms (confide.web): a toy service built on ``Handlers`` gets signed
requests, replay records, a refusal's nonce used up and problem+json answers, as the hub
and storage will."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.db import make_engine, upgrade
from confide.errors import ConfideError
from confide.web.bodies import json_object, read_body
from confide.web.handlers import Handlers
from confide.web.problems import BASE_TABLE, Answer, exception_handlers

AUDIENCE = "toy/test"
WALLET = Wallet.generate()


class FullError(ConfideError):
    """The toy's own refusal, answered 507 by its table."""


class Toy(Handlers):
    """One signed route: ``POST /items`` with ``{"n": int}``; n < 0 is refused."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, AUDIENCE, time.time, "toy")
        self.items: list[int] = []

    async def add(self, request: Request) -> Response:
        body = await read_body(request, 1024)
        return await self.blocking(self._add, request, body)

    def _add(self, request: Request, body: bytes) -> Response:
        with self.signed_request(request, body) as signed:
            n = json_object(body, 2).get("n")
            if not isinstance(n, int) or n < 0:
                raise ConfideError("n is a natural number")
            if n > 9:
                raise FullError("the toy holds at most 9")
            with self.engine.begin() as connection:
                signed.record_in(connection)
                self.items.append(n)
        return JSONResponse({"items": self.items}, status_code=201)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    engine = make_engine(f"sqlite:///{tmp_path / 'toy.db'}")
    upgrade(engine)
    toy = Toy(engine)
    table = BASE_TABLE.extended({FullError: Answer(507, "Insufficient Storage")})
    app = Starlette(
        routes=[Route("/items", toy.add, methods=["POST"])],
        exception_handlers=exception_handlers(table, "toy", logging.getLogger("toy")),
    )
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client
    engine.dispose()


def _post(client: TestClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    if headers is None:
        headers = sign_request(
            WALLET,
            audience=AUDIENCE,
            method="POST",
            path="/items",
            content_type="application/json",
            body=body,
            now=int(time.time()),
        )
        headers["content-type"] = "application/json"
    response: httpx.Response = client.post("/items", content=body, headers=headers)
    return response


def test_a_service_on_the_edge_answers_by_its_table(client: TestClient) -> None:
    assert _post(client, b'{"n": 1}').status_code == 201
    refused = _post(client, b'{"n": -1}')
    assert refused.status_code == 400 and refused.json()["detail"] == "n is a natural number"
    assert refused.headers["content-type"] == "application/problem+json"
    full = _post(client, b'{"n": 10}')
    assert (full.status_code, full.json()["title"]) == (507, "Insufficient Storage")
    assert _post(client, b'{"n": 1}', {"content-type": "application/json"}).status_code == 401


@pytest.mark.parametrize("body", [b'{"n": 2}', b'{"n": -1}', b'{"n": 10}', b"[[[", b'{"n":[[1]]}'])
def test_every_request_of_a_service_is_used_once(client: TestClient, body: bytes) -> None:
    headers = sign_request(
        WALLET,
        audience=AUDIENCE,
        method="POST",
        path="/items",
        content_type="application/json",
        body=body,
        now=int(time.time()),
    )
    headers["content-type"] = "application/json"
    first = _post(client, body, headers)
    assert first.status_code in (201, 400, 507)
    again = _post(client, body, headers)
    assert again.status_code == 401 and "replayed" in again.json()["detail"]
