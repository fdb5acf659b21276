"""A bounded schemathesis run against a live sms, driven by its own ``/openapi.json``.

Every operation gets generated requests, valid ones and ones that break the schema, each
signed by a test wallet (a ``requests`` auth hook signs the prepared request: the exact
path, query, content type and body bytes that go on the wire). The run fails on any 5xx
and on any response the description does not allow (status, content type, body
schema). Half of the generated owners and names are the test wallet's own and a session
and secret that exist, so requests get past authorisation into the handlers too.

Bounded: ``EXAMPLES`` per operation and generation mode, no shrinking (a failure is
reported as found, request and response), about 20 s per database (SQLite, and
PostgreSQL when CONFIDE_TEST_PG is set).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from confide.client.sms import SmsClient
from confide.crypto.requests import canonical_query, sign_request
from confide.crypto.wallet import Wallet
from tests.integration.sms_server import audience_of, running_sms

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
WALLET = Wallet.generate()
OWN_NAME = "fuzz"  # a session and a requester secret of WALLET's that exist
ADDRESS_PARAMETERS = ("address", "owner", "app", "dataset")
SESSION = """\
name: fuzz
version: "1"
predecessor: null
services:
  - {name: app, measurements: ["sim:SIM"], command: run}
secrets:
  - {name: k, kind: key}
volumes:
  - {name: out, mode: output}
"""


class SignWithWallet(requests.auth.AuthBase):
    """Signs each prepared request as confide's client does (``confide.crypto.requests``)."""

    def __init__(self, wallet: Wallet, audience: str) -> None:
        self.wallet = wallet
        self.audience = audience

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(request.url or "")
        body = request.body or b""
        if not isinstance(body, str | bytes):
            raise TypeError("a streamed body cannot be signed")  # schemathesis sends bytes
        content_type = request.headers.get("Content-Type", "")
        headers = sign_request(
            self.wallet,
            audience=self.audience,
            method=request.method or "GET",
            path=url.path,
            query=canonical_query(parse_qsl(url.query, keep_blank_values=True)),
            content_type=content_type if isinstance(content_type, str) else content_type.decode(),
            body=body.encode() if isinstance(body, str) else body,
            now=int(time.time()),
        )
        request.headers.update(headers)
        return request


@pytest.fixture
def sms(tmp_path: Path, database_url: str) -> Iterator[str]:
    home = tmp_path / "sms"
    with running_sms(home, database_url, allow_sim=True) as base:
        client = SmsClient(base, wallet=WALLET, trust_dir=home / "trust")
        client.create_session(SESSION.replace("SIM", "ab" * 32), {}, "fuzz.yml")
        client.push_requester_secret(OWN_NAME, b"value")
        yield base


def _operations(base: str) -> list[Any]:
    """Every operation of the description (a malformed one fails the test here)."""
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"/openapi.json describes an invalid operation: {result.err()}")
        operations.append(result.ok())
    return operations


def _own_where_chosen(case: Any, own: bool) -> None:
    """Point half the cases at the wallet's own resources (the flag comes from hypothesis)."""
    parameters = case.path_parameters or {}
    if not own or not parameters:
        return
    for name in ADDRESS_PARAMETERS:
        if name in parameters:
            parameters[name] = WALLET.address
    if "name" in parameters:
        parameters["name"] = OWN_NAME
    if "volume" in parameters:
        parameters["volume"] = "out"


def _fuzz(operation: Any, mode: GenerationMode, base: str, session: requests.Session) -> str:
    """Run one operation in one mode; the failure report, or "" when it held."""

    @given(case=operation.as_strategy(generation_mode=mode), own=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure is reproducible
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, own: bool) -> None:
        _own_where_chosen(case, own)
        case.call_and_validate(base_url=base, session=session, checks=CHECKS, timeout=10)

    try:
        run()
    except Unsatisfiable:  # nothing to break: no parameters and no body (GET /health)
        return ""
    except (Exception, BaseExceptionGroup) as exc:  # FailureGroup: request, response, curl
        return f"{operation.label} ({mode.value}): {exc}"
    return ""


def test_every_operation_answers_within_its_description(sms: str) -> None:
    session = requests.Session()
    session.auth = SignWithWallet(WALLET, audience_of(sms))
    operations = _operations(sms)
    assert len(operations) >= 20  # every route of docs/sms.md is described
    started = time.monotonic()
    failures = [
        report
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (report := _fuzz(operation, mode, sms, session))
    ]
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 120  # bounded (about 30 s here)
    assert httpx.get(sms + "/health").status_code == 200  # and it still answers


def test_the_signing_hook_signs_what_the_sms_verifies(sms: str) -> None:
    """Without this, every signed operation would be fuzzed only up to its 401."""
    session = requests.Session()
    session.auth = SignWithWallet(WALLET, audience_of(sms))
    path = f"/v1/requesters/{WALLET.address}/secrets/signed-by-the-hook"
    response = session.put(
        sms + path,
        params=[("tolerate", "simulation"), ("tee", "sim,sgx")],  # a query to canonicalise
        data=b"v",
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    own = session.get(f"{sms}/v1/sessions/{WALLET.address}/{OWN_NAME}")
    assert own.status_code == 200, own.text
