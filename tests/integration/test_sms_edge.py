"""The sms's HTTP edge (confide.web): every signed route uses a refused request's nonce up,
document parse errors are 400s, the raw path is what is signed, and refusals answer as
the one table says, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from confide.client.sms import SmsClient
from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.db import make_engine
from confide.sms import http_sessions
from confide.sms.http import create_app
from confide.sms.service import Sms, SmsConfig
from confide.sms.session_document import parse_session
from tests.integration.sms_server import audience_of, running_sms

ALICE = Wallet.generate()
BOB = Wallet.generate()
NOWHERE = "0x" + "c3" * 20  # an app, dataset or owner nobody registered
SIM = "ab" * 32
SESSION = f"""\
name: s1
version: "1"
predecessor: null
services:
  - {{name: app, measurements: ["sim:{SIM}"], command: run}}
volumes:
  - {{name: out, mode: output}}
"""


@contextmanager
def sms_app(tmp_path: Path, database_url: str) -> Iterator[tuple[Starlette, TestClient]]:
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="test"))
    app = create_app(sms, time.time)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            yield app, client
    finally:
        sms.engine.dispose()


def signed(
    client: TestClient,
    wallet: Wallet,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "",
) -> tuple[str, str, bytes, dict[str, str]]:
    """A request signed over ``path`` exactly as it is sent (its raw form)."""
    audience = client.get("/v1/info").json()["audience"]
    headers = sign_request(
        wallet,
        audience=audience,
        method=method,
        path=path,
        content_type=content_type,
        body=body,
        now=int(time.time()),
    )
    if content_type:
        headers["content-type"] = content_type
    return method, path, body, headers


@dataclass(frozen=True)
class Refused:
    """A correctly signed request that the route refuses, and the status it gets."""

    method: str
    path: str
    body: bytes
    content_type: str
    status: int
    wallet: Wallet = BOB


JSON = "application/json"
OCTETS = "application/octet-stream"
SESSION_PATH = f"/v1/sessions/{ALICE.address}/s1"
VOLUME_PATH = f"{SESSION_PATH}/volumes/out"
MISSING_PATH = f"/v1/sessions/{ALICE.address}/missing"

# Every signed (route, method): how it is refused. A route added without an entry here
# (or in PUBLIC) fails the walk, so no signed route escapes it.
REFUSALS: dict[tuple[str, str], Refused] = {
    ("/v1/requesters/{address}/secrets/{name}", "PUT"): Refused(
        "PUT", f"/v1/requesters/{ALICE.address}/secrets/x", b"v", OCTETS, 403
    ),
    ("/v1/requesters/{address}/result-key", "PUT"): Refused(
        "PUT", f"/v1/requesters/{ALICE.address}/result-key", b"k" * 32, OCTETS, 403
    ),
    ("/v1/apps/{app}/secret", "PUT"): Refused(
        "PUT", f"/v1/apps/{NOWHERE}/secret", b"v", OCTETS, 404
    ),
    ("/v1/datasets/{dataset}/key", "PUT"): Refused(
        "PUT", f"/v1/datasets/{NOWHERE}/key", b"v", OCTETS, 404
    ),
    ("/v1/sessions", "POST"): Refused("POST", "/v1/sessions", b"not json", JSON, 400),
    ("/v1/sessions/{owner}/{name}", "GET"): Refused("GET", MISSING_PATH, b"", "", 403),
    ("/v1/sessions/{owner}/{name}", "HEAD"): Refused("HEAD", MISSING_PATH, b"", "", 403),
    ("/v1/sessions/{owner}/{name}", "PUT"): Refused(
        "PUT", SESSION_PATH, b'{"yaml": 1}', JSON, 400, ALICE
    ),
    ("/v1/sessions/{owner}/{name}/history", "GET"): Refused(
        "GET", f"{MISSING_PATH}/history", b"", "", 403
    ),
    ("/v1/sessions/{owner}/{name}/history", "HEAD"): Refused(
        "HEAD", f"{MISSING_PATH}/history", b"", "", 403
    ),
    ("/v1/platforms", "POST"): Refused("POST", "/v1/platforms", b"[1]", JSON, 403),  # no sim
    ("/v1/attest", "POST"): Refused("POST", "/v1/attest", b"{}", JSON, 400),
    ("/v1/records", "POST"): Refused("POST", "/v1/records", b'{"record": {}}', JSON, 422),
    ("/v1/task-cancels", "POST"): Refused("POST", "/v1/task-cancels", b"{}", JSON, 400),
    ("/v1/sessions/{owner}/{name}/volumes/{volume}", "PUT"): Refused(
        "PUT", VOLUME_PATH, b'{"tag": "00"}', JSON, 400
    ),
    ("/v1/sessions/{owner}/{name}/volumes/{volume}/tags", "GET"): Refused(
        "GET", f"{MISSING_PATH}/volumes/out/tags", b"", "", 403
    ),
    ("/v1/sessions/{owner}/{name}/volumes/{volume}/tags", "HEAD"): Refused(
        "HEAD", f"{MISSING_PATH}/volumes/out/tags", b"", "", 403
    ),
    ("/v1/sessions/{owner}/{name}/volumes/{volume}/key", "POST"): Refused(
        "POST", f"{MISSING_PATH}/volumes/out/key", b'{"public_key": "00"}', JSON, 400
    ),
}
PUBLIC = {
    ("/v1/info", "GET"),
    ("/v1/info", "HEAD"),
    ("/health", "GET"),
    ("/health", "HEAD"),
    ("/ready", "GET"),
    ("/ready", "HEAD"),
    ("/openapi.json", "GET"),
    ("/openapi.json", "HEAD"),
    ("/v1/requesters/{address}/secrets/{name}", "HEAD"),
    ("/v1/requesters/{address}/result-key", "GET"),
    ("/v1/requesters/{address}/result-key", "HEAD"),
    ("/v1/apps/{app}/secret", "HEAD"),
    ("/v1/datasets/{dataset}/key", "HEAD"),
    ("/v1/attest/challenge", "POST"),
    ("/v1/task-orders/check", "POST"),
    ("/v1/sessions/{owner}/{name}/volumes/{volume}/tags", "POST"),  # the enclave signs it
}


def test_every_signed_route_uses_a_refused_requests_nonce_up(
    tmp_path: Path, database_url: str
) -> None:
    with sms_app(tmp_path, database_url) as (app, client):
        routes = {
            (route.path, method)
            for route in app.routes
            if isinstance(route, Route)
            for method in route.methods or ()
        }
        unknown = routes - PUBLIC - set(REFUSALS)
        assert not unknown, f"routes neither public nor walked: {sorted(unknown)}"
        owner = SmsClient("http://127.0.0.1", wallet=ALICE)
        owner._http = client  # the in-process app, through the client's own signing
        owner.create_session(SESSION, {}, "s.yml")
        for (template, _), refused in sorted(REFUSALS.items()):
            method, path, body, headers = signed(
                client,
                refused.wallet,
                refused.method,
                refused.path,
                refused.body,
                refused.content_type,
            )
            first = client.request(method, path, content=body, headers=headers)
            assert first.status_code == refused.status, (template, method, first.text)
            again = client.request(method, path, content=body, headers=headers)
            assert again.status_code == 401, (template, method, again.text)
            if method != "HEAD":
                assert "replayed" in again.json()["detail"], (template, method)


def test_deep_nesting_is_a_400_and_uses_the_nonce_up(tmp_path: Path, database_url: str) -> None:
    """Deeper than any recursion limit a library may set (py_ecc sets 100,000), within
    the 256 KiB a session body may be: a RecursionError and a 500 before."""
    levels = 120_000
    deep_yaml = "name: s\nservices: " + "[" * levels + "]" * levels + "\n"
    deep_json_in_yaml = "{" + '"a":[' * (levels // 4) + "]" * (levels // 4) + "}"
    deep_body = b"[" * levels + b"]" * levels
    with sms_app(tmp_path, database_url) as (_, client):
        for body in (
            json.dumps({"yaml": deep_yaml}).encode(),
            json.dumps({"yaml": deep_json_in_yaml}).encode(),
            deep_body,
        ):
            request = signed(client, ALICE, "POST", "/v1/sessions", body, JSON)
            method, path, content, headers = request
            first = client.request(method, path, content=content, headers=headers)
            assert first.status_code == 400, first.text[:300]
            assert first.headers["content-type"] == "application/problem+json"
            again = client.request(method, path, content=content, headers=headers)
            assert again.status_code == 401 and "replayed" in again.json()["detail"]


@pytest.mark.parametrize("escape", ["%3F", "%2F", "%25", "%3Fupdate=true"])
def test_a_percent_escaped_path_is_refused_not_signed_as_another(
    tmp_path: Path, database_url: str, escape: str
) -> None:
    """``a%2Fhistory`` decodes to another route's path: whichever way it is signed (raw
    or decoded), it is refused with a 400 that says why, never answered by that route."""
    with sms_app(tmp_path, database_url) as (_, client):
        alice = SmsClient("http://127.0.0.1", wallet=ALICE)
        alice._http = client
        alice.create_session(SESSION, {}, "s.yml")
        for raw in (
            f"{SESSION_PATH}{escape}history",
            f"/v1/requesters/{ALICE.address}/secrets/a{escape}b",
        ):
            method = "GET" if raw.startswith("/v1/sessions") else "PUT"
            body = b"" if method == "GET" else b"v"
            decoded = raw.replace("%3F", "?").replace("%2F", "/").replace("%25", "%")
            for signed_path in (raw, decoded):
                _, _, _, headers = signed(
                    client, ALICE, method, signed_path.split("?")[0], body, OCTETS
                )
                answer = client.request(method, raw, content=body, headers=headers)
                # refused for the escape, or for the name it decodes to; never answered
                assert answer.status_code in (400, 404), (raw, signed_path, answer.text)
                if answer.status_code == 400:
                    assert re.search("percent-escape|name .* is not allowed", answer.text)


def test_a_client_that_signs_an_escaped_name_signs_what_it_sends(
    tmp_path: Path, database_url: str
) -> None:
    """The client signs the raw path httpx sends: the server verifies it (and refuses the
    name for its escape, not for a signature mismatch)."""
    with sms_app(tmp_path, database_url) as (_, client):
        alice = SmsClient("http://127.0.0.1", wallet=ALICE)
        alice._http = client
        with pytest.raises(Exception, match=r"400.*percent-escape"):
            alice.call_json("GET", f"{SESSION_PATH}%3Fx", None, signed=True)
        with pytest.raises(Exception, match=r"400.*percent-escape"):
            alice.call_json("GET", f"{SESSION_PATH} x", None, signed=True)


def test_another_owners_session_answers_as_a_missing_one(tmp_path: Path, database_url: str) -> None:
    with sms_app(tmp_path, database_url) as (_, client):
        alice = SmsClient("http://127.0.0.1", wallet=ALICE)
        alice._http = client
        alice.create_session(SESSION, {}, "s.yml")
        answers = []
        for name in ("s1", "nothing"):
            for method, suffix in (("GET", ""), ("GET", "/history")):
                path = f"/v1/sessions/{ALICE.address}/{name}{suffix}"
                _, _, _, headers = signed(client, BOB, method, path)
                answer = client.request(method, path, headers=headers)
                body = answer.json()
                detail = body["detail"].replace(name, "NAME")
                answers.append((answer.status_code, body["title"], detail))
        assert answers[0] == answers[2] and answers[1] == answers[3], answers
        assert answers[0][0] in (403, 404)


def test_a_stale_update_is_409_with_the_current_hash(tmp_path: Path, database_url: str) -> None:
    with sms_app(tmp_path, database_url) as (_, client):
        alice = SmsClient("http://127.0.0.1", wallet=ALICE)
        alice._http = client
        created = alice.create_session(SESSION, {}, "s.yml")
        stale = SESSION.replace("predecessor: null", f"predecessor: {'00' * 32}")
        body = json.dumps({"yaml": stale, "vars": {}}).encode()
        method, path, content, headers = signed(client, ALICE, "PUT", SESSION_PATH, body, JSON)
        answer = client.request(method, path, content=content, headers=headers)
        assert answer.status_code == 409
        assert answer.json()["current_hash"] == created["hash"]


def test_session_bodies_are_at_most_256_kib(tmp_path: Path, database_url: str) -> None:
    with sms_app(tmp_path, database_url) as (_, client):
        padding = "#" * (256 * 1024)
        body = json.dumps({"yaml": SESSION + padding}).encode()
        method, path, content, headers = signed(client, ALICE, "POST", "/v1/sessions", body, JSON)
        answer = client.request(method, path, content=content, headers=headers)
        assert answer.status_code == 413
        assert "at most 262144 bytes" in answer.json()["detail"]


def test_session_documents_are_parsed_off_the_database_threads(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    parse = parse_session

    def spy(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return parse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(http_sessions, "parse_session", spy)
    with sms_app(tmp_path, database_url) as (_, client):
        alice = SmsClient("http://127.0.0.1", wallet=ALICE)
        alice._http = client
        alice.create_session(SESSION, {}, "s.yml")
    assert threads and not any("-db" in name for name in threads), threads


def test_a_slow_session_parse_holds_no_other_wallets_push(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parse that takes a second (as an aliased document took 21 to 102 s) runs beside
    the database work: another wallet's push meanwhile answers in a fraction of it."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return parse_session(*args, **kwargs)

    monkeypatch.setattr(http_sessions, "parse_session", slow)
    with running_sms(tmp_path / "sms", database_url) as base:
        alice, bob = SmsClient(base, wallet=ALICE), SmsClient(base, wallet=BOB)
        bob.push_requester_secret("warm", b"v")  # connections and threads started
        creating = threading.Thread(target=alice.create_session, args=(SESSION, {}, "s.yml"))
        creating.start()
        time.sleep(0.2)  # the parse is under way
        started = time.monotonic()
        bob.push_requester_secret("during", b"v")
        took = time.monotonic() - started
        creating.join(10)
        assert took < 0.5, f"a push waited {took:.2f} s behind a session's parse"
        assert alice.session(ALICE.address, "s1")["name"] == "s1"


def test_a_full_database_disk_is_a_503_that_says_so(tmp_path: Path) -> None:
    """SQLite refuses to grow past max_page_count as it does on a full disk (SQLITE_FULL)."""
    url = f"sqlite:///{tmp_path / 'full.db'}"
    engine = make_engine(url)
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=url, deployment_id="t"), engine=engine)
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()

    @event.listens_for(engine, "connect")
    def cap(dbapi_connection: object, record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    engine.dispose()  # every connection from now on is capped
    try:
        with TestClient(create_app(sms, time.time), base_url="http://127.0.0.1") as client:
            path = f"/v1/requesters/{ALICE.address}/secrets/big"
            body = b"x" * 60_000
            _, _, _, headers = signed(client, ALICE, "PUT", path, body, OCTETS)
            answer = client.put(path, content=body, headers=headers)
            assert answer.status_code == 503, answer.text
            assert "disk is full" in answer.json()["detail"]
            assert answer.headers["retry-after"] == "1"
    finally:
        engine.dispose()


def test_an_escaped_path_over_real_http_is_refused_for_its_escape(
    tmp_path: Path, database_url: str
) -> None:
    """uvicorn hands the app the raw path as sent: signed as sent, it is verified, and
    refused (400) for its escape; signed decoded, it is refused too."""
    with running_sms(tmp_path / "sms", database_url) as base:
        alice = SmsClient(base, wallet=ALICE)
        assert alice.create_session(SESSION, {}, "s.yml")["name"] == "s1"
        for sent, signed_as in (
            (f"{SESSION_PATH}%2Fhistory", f"{SESSION_PATH}%2Fhistory"),
            (f"{SESSION_PATH}%2Fhistory", f"{SESSION_PATH}/history"),
        ):
            headers = sign_request(
                ALICE,
                audience=audience_of(base),
                method="GET",
                path=signed_as,
                now=int(time.time()),
            )
            answer = httpx.get(base + sent, headers=headers)
            assert answer.status_code == 400, answer.text
            assert "percent-escape" in answer.json()["detail"]


def test_a_client_gone_mid_body_is_one_short_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """150 bytes announced, 50 sent, then the client is gone: the app answers (to no one)
    without raising, which uvicorn would log as a 2.9 KB traceback."""
    url = f"sqlite:///{tmp_path / 'db'}"
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=url, deployment_id="t"))
    app = create_app(sms, time.time)
    path = f"/v1/requesters/{ALICE.address}/secrets/x"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"150")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": b"x" * 50, "more_body": True}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    caplog.set_level(logging.DEBUG)
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        sms.engine.dispose()
    records = [r for r in caplog.records if r.name.startswith(("confide", "uvicorn", "starlette"))]
    assert len(records) <= 1, [r.getMessage() for r in records]
    assert all(len(r.getMessage()) < 200 and not r.exc_info for r in records)


def test_request_json_is_parsed_off_the_event_loop(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsigned attestation's body and a session's JSON wrapper are parsed on worker
    threads: a caller who needs no wallet must not make every other request wait while
    the event loop checks and parses its JSON."""
    from confide.sms import http_attest
    from confide.web.bodies import json_object

    threads: list[str] = []
    real = json_object

    def spy(body: bytes, max_depth: int) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return real(body, max_depth)

    monkeypatch.setattr(http_attest, "json_object", spy)
    monkeypatch.setattr(http_sessions, "json_object", spy)
    with running_sms(tmp_path / "sms", database_url) as base:
        loop_thread = httpx.get(f"{base}/health")  # the server is up
        assert loop_thread.status_code == 200
        answer = httpx.post(f"{base}/v1/attest", content=b"[" * 10 + b"]" * 10)
        assert answer.status_code == 400
        SmsClient(base, wallet=ALICE).create_session(SESSION, {}, "s.yml")
    assert len(threads) == 2, threads
    assert all(name.startswith("sms-") for name in threads), threads


def test_a_full_parsing_queue_answers_503_at_once(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents waiting for the parsing thread are bounded: beyond the queue, a session
    write is refused 503 at once instead of waiting behind every other wallet's."""
    from confide.web.handlers import PARSE_QUEUE

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return parse_session(*args, **kwargs)

    monkeypatch.setattr(http_sessions, "parse_session", slow)
    wallets = [Wallet.generate() for _ in range(PARSE_QUEUE + 8)]
    with running_sms(tmp_path / "sms", database_url) as base:
        audience = audience_of(base)
        requests = []
        for wallet in wallets:
            body = json.dumps({"yaml": SESSION, "vars": {}, "source": "s.yml"}).encode()
            headers = sign_request(
                wallet,
                audience=audience,
                method="POST",
                path="/v1/sessions",
                query="",
                content_type="application/json",
                body=body,
                now=int(time.time()),
            )
            requests.append((body, {**headers, "content-type": "application/json"}))
        meeting = threading.Barrier(len(requests), timeout=30)

        def send(request: tuple[bytes, dict[str, str]]) -> tuple[int, float]:
            meeting.wait()
            began = time.monotonic()
            answer = httpx.post(
                f"{base}/v1/sessions", content=request[0], headers=request[1], timeout=120
            )
            return answer.status_code, time.monotonic() - began

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, requests))
    statuses = sorted(status for status, _ in answers)
    assert set(statuses) == {201, 503}, statuses
    assert statuses.count(201) >= PARSE_QUEUE // 2, statuses
    refused = [seconds for status, seconds in answers if status == 503]
    slowest_accepted = max(seconds for status, seconds in answers if status == 201)
    assert max(refused) < slowest_accepted, (refused, slowest_accepted)
