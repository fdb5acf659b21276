"""App secrets, dataset keys, result keys and release policies over real HTTP, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from confide.attestation.measurement import Measurement
from confide.client.sms import SmsClient
from confide.crypto.requests import canonical_query, sign_request
from confide.crypto.result_key import ResultKeyPair, result_key_sha256
from confide.crypto.wallet import Wallet
from confide.db.schema import secrets
from confide.errors import AuthError, SecretError
from confide.sms.registry import MemoryRegistry
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import SecretRef, StoredSecret
from confide.sms.service import Sms, SmsConfig
from tests.integration.sms_server import audience_of, running_sms

ALICE = Wallet.generate()
BOB = Wallet.generate()
APP = "0x" + "aa" * 20
DATASET = "0x" + "da" * 20
UNKNOWN = "0x" + "0f" * 20
POOL = "0x" + "c3" * 20
SGX = "sgx:" + "ab" * 32
APP_VALUE = b"APP-SECRET-VALUE-7731"
DATASET_VALUE = b"DATASET-KEY-VALUE-9914"
PINNED = canonical_query([("app", SGX), ("tee", "sgx")])


def _registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.add_app(APP, ALICE.address, Measurement.parse(SGX))
    registry.add_dataset(DATASET, ALICE.address)
    return registry


def _put(
    base: str, wallet: Wallet, path: str, body: bytes, query: str = "", audience: str | None = None
) -> httpx.Response:
    headers = sign_request(
        wallet,
        audience=audience or audience_of(base),
        method="PUT",
        path=path,
        query=query,
        body=body,
        content_type="application/octet-stream",
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    return httpx.put(base + path + (f"?{query}" if query else ""), content=body, headers=headers)


def _release(home: Path, database_url: str, ref: SecretRef) -> StoredSecret:
    """What the attestation code would release (the sms's own store, after it stopped)."""
    sms = Sms(SmsConfig(home=home, db_url=database_url, deployment_id="test"))
    try:
        return sms.secrets.release(ref)
    finally:
        sms.engine.dispose()


def test_app_secret_push_check_and_refusals(tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "sms"
    with running_sms(home, database_url, registry=_registry()) as base:
        alice = SmsClient(base, wallet=ALICE)
        assert not alice.app_secret_exists(APP)
        policy = ReleasePolicy(
            tee=frozenset({"sgx"}),
            tolerate=frozenset({"outdated-tcb"}),
            apps=frozenset({Measurement.parse(SGX)}),
        )
        unpinned = ReleasePolicy(tee=frozenset({"sgx"}))
        with pytest.raises(SecretError, match="must name the app measurement"):
            alice.push_app_secret(APP, APP_VALUE, policy=unpinned)
        assert alice.push_app_secret(APP.upper().replace("0X", "0x"), APP_VALUE, policy=policy) == 1
        head = httpx.head(f"{base}/v1/apps/{APP.upper().replace('0X', '0x')}/secret")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "0")
        assert httpx.head(f"{base}/v1/apps/{UNKNOWN}/secret").status_code == 404
        with pytest.raises(SecretError, match=r"409.*use --update"):
            alice.push_app_secret(APP, b"again", policy=policy)
        assert alice.push_app_secret(APP, b"v2", update=True, policy=policy) == 2

        path = f"/v1/apps/{APP}/secret"
        bob = _put(base, BOB, path, b"bob's", "update=true")
        assert bob.status_code == 403 and ALICE.address in bob.json()["detail"]
        assert bob.headers["content-type"] == "application/problem+json"
        unknown = _put(base, ALICE, f"/v1/apps/{UNKNOWN}/secret", b"v")
        assert unknown.status_code == 404 and f"app {UNKNOWN} is not registered" in unknown.text
        no_app = _put(base, ALICE, path, b"v", "requester=" + BOB.address + "&update=true")
        assert no_app.status_code == 400 and "must name the app measurement" in no_app.text
        elsewhere = _put(base, ALICE, path, b"v", "update=true", audience="sms/elsewhere")
        assert elsewhere.status_code == 401 and "does not match" in elsewhere.json()["detail"]
        assert httpx.put(base + path, content=b"v").status_code == 401  # unsigned
        tdx = ReleasePolicy(tee=frozenset({"tdx"}))
        assert alice.push_requester_secret("x1", b"requester value", policy=tdx) == 1
    stored = _release(home, database_url, SecretRef(ALICE.address, "app", "1", subject=APP))
    assert stored == StoredSecret(2, b"v2", policy)
    requester = _release(home, database_url, SecretRef(ALICE.address, "requester", "x1"))
    assert requester == StoredSecret(1, b"requester value", tdx)


def test_dataset_key_with_restrictions(tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "sms"
    with running_sms(home, database_url, registry=_registry()) as base:
        alice = SmsClient(base, wallet=ALICE)
        policy = ReleasePolicy(
            tee=frozenset({"sgx", "tdx"}),
            apps=frozenset({Measurement.parse(SGX)}),
            requesters=frozenset({BOB.address}),
            workerpools=frozenset({POOL}),
        )
        assert alice.push_dataset_key(DATASET, DATASET_VALUE, policy=policy) == 1
        assert alice.dataset_key_exists(DATASET.upper().replace("0X", "0x"))
        assert not alice.dataset_key_exists(UNKNOWN)
        path = f"/v1/datasets/{DATASET}/key"
        bob = _put(base, BOB, path, b"v", "update=true")
        assert bob.status_code == 403 and f"dataset's owner {ALICE.address}" in bob.text
        assert _put(base, ALICE, f"/v1/datasets/{UNKNOWN}/key", b"v").status_code == 404
        with pytest.raises(AuthError, match="403"):
            SmsClient(base, wallet=BOB).push_dataset_key(DATASET, b"v", update=True)
        rotated = DATASET_VALUE + b"-2"  # an update without options keeps the restrictions
        assert alice.push_dataset_key(DATASET, rotated, update=True) == 2
    stored = _release(
        home, database_url, SecretRef(ALICE.address, "dataset", "key", subject=DATASET)
    )
    assert stored == StoredSecret(2, rotated, policy)
    if database_url.startswith("sqlite"):  # no plaintext value anywhere in the database files
        db = Path(database_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        assert DATASET_VALUE not in raw and rotated not in raw and len(raw) > 0


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("tee=sgz", "unknown TEE type 'sgz'"),
        ("tolerate=outdated-tcb,everything", "unknown toleration 'everything'"),
        ("app=" + "ab" * 32, "is not typed"),
        ("requester=0x1234", "'0x1234' is not a wallet address"),
        ("workerpool=", "'workerpool' has an empty value"),
        ("update=yes", "update must be given once, as true or false"),
        ("tolerated=debug-mode", "unknown release policy option 'tolerated'"),
    ],
)
def test_bad_policy_options_are_400_naming_them(
    tmp_path: Path, database_url: str, query: str, named: str
) -> None:
    key, _, value = query.partition("=")
    paths = [
        f"/v1/datasets/{DATASET}/key",
        f"/v1/apps/{APP}/secret",
        f"/v1/requesters/{ALICE.address}/secrets/x",
    ]
    if key in ("app", "requester", "workerpool"):  # dataset keys only: refused elsewhere anyway
        paths = paths[:1]
    with running_sms(tmp_path / "sms", database_url, registry=_registry()) as base:
        for path in paths:
            response = _put(base, ALICE, path, b"v", canonical_query([(key, value)]))
            assert response.status_code == 400, (path, response.text)
            assert named in response.json()["detail"]
        client = SmsClient(base)
        assert not client.dataset_key_exists(DATASET) and not client.app_secret_exists(APP)
        assert not client.requester_secret_exists(ALICE.address, "x")  # nothing was stored


def test_result_key_push_and_public_read(tmp_path: Path, database_url: str) -> None:
    first, second = ResultKeyPair.generate(), ResultKeyPair.generate()
    with running_sms(tmp_path / "sms", database_url) as base:
        alice = SmsClient(base, wallet=ALICE)
        assert alice.result_key(ALICE.address) is None
        pushed = alice.push_result_key(first.public_bytes)
        assert pushed == {
            "address": ALICE.address,
            "version": 1,
            "sha256": result_key_sha256(first.public_bytes),
        }
        assert alice.push_result_key(second.public_bytes)["version"] == 2  # no --update needed
        public = httpx.get(
            f"{base}/v1/requesters/{ALICE.address.upper().replace('0X', '0x')}/result-key"
        ).json()
        key = second.public_bytes
        assert public == {
            "address": ALICE.address,
            "public_key": key.hex(),
            "sha256": result_key_sha256(key),
            "version": 2,
        }
        path = f"/v1/requesters/{ALICE.address}/result-key"
        assert _put(base, BOB, path, first.public_bytes).status_code == 403
        short = _put(base, ALICE, path, first.public_bytes[:31])
        assert short.status_code == 400 and "32-byte" in short.json()["detail"]
        low_order = _put(base, ALICE, path, bytes(32))
        assert low_order.status_code == 400 and "not a usable X25519 key" in low_order.text
        options = _put(base, ALICE, path, first.public_bytes, "update=true")
        assert options.status_code == 400 and "takes no options" in options.text
        assert httpx.get(f"{base}/v1/requesters/{BOB.address}/result-key").status_code == 404
        assert alice.result_key(ALICE.address)["version"] == 2  # type: ignore[index]


def test_replays_including_of_a_refused_request(tmp_path: Path, database_url: str) -> None:
    registry = _registry()
    with running_sms(tmp_path / "sms", database_url, registry=registry) as base:
        path = f"/v1/apps/{APP}/secret"
        headers = sign_request(
            ALICE,
            audience=audience_of(base),
            method="PUT",
            path=path,
            query=PINNED,
            body=b"v",
            content_type="application/octet-stream",
            now=int(time.time()),
        )
        headers["content-type"] = "application/octet-stream"
        assert (
            httpx.put(base + path + "?" + PINNED, content=b"v", headers=headers).status_code == 201
        )
        again = httpx.put(base + path + "?" + PINNED, content=b"v", headers=headers)
        assert again.status_code == 401 and "replayed" in again.json()["detail"]
        # Refused because the app is not registered yet; once it is, the same request
        # must not succeed by replay.
        late = "0x" + "1a" * 20
        path = f"/v1/apps/{late}/secret"
        headers = sign_request(
            ALICE,
            audience=audience_of(base),
            method="PUT",
            path=path,
            query=PINNED,
            body=b"v",
            content_type="application/octet-stream",
            now=int(time.time()),
        )
        headers["content-type"] = "application/octet-stream"
        url = base + path + "?" + PINNED
        assert httpx.put(url, content=b"v", headers=headers).status_code == 404
        registry.add_app(late, ALICE.address, Measurement.parse(SGX))
        replay = httpx.put(url, content=b"v", headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
        assert not SmsClient(base).app_secret_exists(late)


def test_oversized_bodies_and_hostile_paths(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url, registry=_registry()) as base:
        port = int(base.rsplit(":", 1)[1])
        for path in (f"/v1/apps/{APP}/secret", f"/v1/datasets/{DATASET}/key"):
            now = int(time.time())
            signed = sign_request(ALICE, audience="test", method="PUT", path=path, now=now)
            head = "".join(f"{name}: {value}\r\n" for name, value in signed.items())
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(
                    f"PUT {path} HTTP/1.1\r\nHost: x\r\n{head}"
                    f"Content-Length: 100000000\r\n\r\n".encode()
                )
                answer = b""
                while b"}" not in answer:  # the 100 MB body is never sent
                    chunk = raw.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 413") and b"at most 65536 bytes" in answer
        with pytest.raises(SecretError, match="413"):
            SmsClient(base, wallet=ALICE).push_app_secret(APP, b"x" * 65537)
        lookalike = APP.replace("a", "\u0430", 1)  # a Cyrillic letter in the address
        fullwidth = "\uff10x" + "aa" * 20
        for bad in (
            f"{APP}%2F..%2F..",
            "..%2F" + APP,
            lookalike,
            fullwidth,
            "0x';DROP TABLE secrets;--",
            APP + "%00",
            APP + "'",
        ):
            for route in ("apps/{}/secret", "datasets/{}/key", "requesters/{}/result-key"):
                path = "/v1/" + route.format(bad)
                put = _put(base, ALICE, path, b"v")
                assert put.status_code in (400, 404), (path, put.status_code)
                assert "Traceback" not in put.text
                method = "GET" if "result-key" in route else "HEAD"
                assert httpx.request(method, base + path).status_code in (400, 404), path
        assert SmsClient(base).app_secret_exists(APP) is False


def test_a_policy_edited_in_the_database_is_never_released(
    tmp_path: Path, database_url: str
) -> None:
    home = tmp_path / "sms"
    with running_sms(home, database_url, registry=_registry()) as base:
        policy = ReleasePolicy(tee=frozenset({"tdx"}), apps=frozenset({Measurement.parse(SGX)}))
        SmsClient(base, wallet=ALICE).push_app_secret(APP, APP_VALUE, policy=policy)
    sms = Sms(SmsConfig(home=home, db_url=database_url, deployment_id="test"))
    try:
        with sms.engine.begin() as connection:  # someone with database access widens it
            connection.execute(update(secrets).values(policy='{"tee":["sim","tdx"]}'))
        with pytest.raises(SecretError, match="release policy"):
            sms.secrets.release(SecretRef(ALICE.address, "app", "1", subject=APP))
    finally:
        sms.engine.dispose()


def test_concurrent_checks_are_each_answered_and_see_another_replicas_write(
    tmp_path: Path, database_url: str
) -> None:
    """HEAD checks sent at once (read in batches, confide.sms.batching): each gets its own
    answer; a secret another process wrote after a check said 404 is then seen (absence
    is never remembered)."""
    home = tmp_path / "sms"
    with running_sms(home, database_url) as base:
        client = SmsClient(base, wallet=ALICE)
        present = {f"s{i}" for i in range(0, 60, 3)}
        for name in sorted(present):
            client.push_requester_secret(name, b"v")
        names = [f"s{i}" for i in range(60)] * 2

        async def check_all() -> list[int]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                answers = await asyncio.gather(
                    *(http.head(f"/v1/requesters/{ALICE.address}/secrets/{n}") for n in names)
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(check_all())
        assert statuses == [200 if n in present else 404 for n in names]

        late = SecretRef(ALICE.address.lower(), "requester", "s1")
        other = Sms(SmsConfig(home=home, db_url=database_url, deployment_id="test"))
        try:
            other.secrets.put(late, b"v", update=False, now=int(time.time()))
        finally:
            other.engine.dispose()
        assert asyncio.run(check_all())[1] == 200
