"""Session attestation over real HTTP: challenge, sim evidence, sealed configuration,
volume tags, and every refusal the issue lists (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from confide.attestation.measurement import Measurement
from confide.attestation.sim import SimAttester, registration_proof
from confide.attestation.token import TokenCheck, verify_token
from confide.attestation.verifier import EnclaveBinding
from confide.client.enclave import attest_and_open, open_grant
from confide.client.sms import SmsClient
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.db import make_engine
from confide.db.audit import verify_chain
from confide.db.schema import audit_log, sim_platforms
from confide.errors import AttestationError, AuthError, ConfideError
from confide.sms.attest import Attestations
from confide.sms.session_document import parse_session
from confide.sms.volumes import TAG_LABEL, VolumeTags, tag_message
from tests.integration.sms_server import running_sms
from tests.vectors.dcap_vectors import (
    SGX,
    SGX_MR_ENCLAVE,
    TDX,
    TDX_MR_TD,
    TDX_RTMR1,
    TDX_RTMR2,
)

OWNER = Wallet.generate()
OTHER = Wallet.generate()
APP = Measurement.parse("sim:" + "ab" * 32)
API_KEY = "api-key-value-7f3e"

SESSION = f"""
name: cubic
version: "1"
services:
  - name: app
    measurements: ["{APP}"]
    command: python3 /app/app.py --token $$confide:secrets:token$$
    environment:
      API_KEY: "$$confide:secrets:api_key$$"
      MODE: production
    volumes: [input, output]
  - name: reader
    measurements: ["{APP}"]
    command: python3 /app/read.py
    volumes: [input]
volumes:
  - name: input
  - name: output
secrets:
  - name: api_key
    kind: ascii
    value: "{API_KEY}"
  - name: token
    kind: key
security:
  tolerate: [simulation]
"""


def sms_key(client: SmsClient) -> bytes:
    x = client.info()["jwks"]["keys"][0]["x"]
    return base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))


@dataclass
class World:
    base: str
    owner: SmsClient
    platform: SigningKey
    session: dict[str, Any]

    def target(self, **override: str) -> dict[str, Any]:
        s = self.session
        return {"session": {"owner": s["owner"], "name": s["name"], "hash": s["hash"], **override}}

    def attest(
        self,
        keys: EnclaveKeys,
        *,
        service: str = "app",
        measurement: Measurement = APP,
        target: dict[str, Any] | None = None,
    ) -> Any:
        client = SmsClient(self.base)
        return attest_and_open(
            client,
            SimAttester(self.platform, measurement),
            keys,
            sms_key=sms_key(self.owner),
            target=target or self.target(),
            service=service,
            worker="host-1",
        )


@contextmanager
def world(
    tmp_path: Path,
    database_url: str,
    session: str = SESSION,
    allow_sim: bool = True,
    engine: Engine | None = None,
) -> Iterator[World]:
    with running_sms(tmp_path / "sms", database_url, allow_sim=allow_sim, engine=engine) as base:
        owner = SmsClient(base, wallet=OWNER)
        platform = SigningKey.generate()
        if allow_sim:  # an sms without --allow-sim registers no sim platform
            owner.register_platform(platform)
        created = owner.create_session(session, {}, "cubic.yml")
        yield World(base, owner, platform, created)


def push_input(w: World, key: bytes, tag: str) -> dict[str, Any]:
    path = f"/v1/sessions/{OWNER.address}/cubic/volumes/input"
    answer: dict[str, Any] = w.owner.call_json(
        "PUT", path, {"key": key.hex(), "tag": tag}, signed=True
    )
    return answer


def report_tag(
    w: World,
    keys: EnclaveKeys,
    volume: str,
    previous: str | None,
    tag: str,
    digest: str = "dd" * 32,
) -> httpx.Response:
    subject = f"{OWNER.address}/cubic@{w.session['hash']}"
    message = tag_message(subject, volume, previous, tag, digest)
    body = {
        "previous_tag": previous,
        "tag": tag,
        "blob_digest": digest,
        "enclave_key": keys.ed25519_public.hex(),
        "signature": keys.signing.sign(TAG_LABEL, message).hex(),
    }
    return httpx.post(
        f"{w.base}/v1/sessions/{OWNER.address}/cubic/volumes/{volume}/tags", json=body
    )


def test_attested_enclave_receives_its_sealed_configuration(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        keys = EnclaveKeys.generate()
        released = w.attest(keys)
        config = released.config
        assert config["environment"] == {"API_KEY": API_KEY, "MODE": "production"}
        assert config["command"].startswith("python3 /app/app.py --token ")
        assert "$$" not in config["command"]  # the generated secret, injected
        assert config["session"]["hash"] == w.session["hash"]
        volumes = {v["name"]: v for v in config["volumes"]}
        assert volumes["input"]["key"] == "11" * 32 and volumes["input"]["tag"] == "aa" * 32
        assert volumes["input"]["path"] == "/encryptedInputs"
        assert len(volumes["output"]["key"]) == 64 and volumes["output"]["tag"] is None
        claims = verify_token(
            released.token,
            w.owner.info()["jwks"],
            TokenCheck(
                issuer="sms-test",
                audience=f"session:{OWNER.address}/cubic",
                now=int(time.time()),
                allow_sim=True,
                expect=(
                    ("subject", f"{OWNER.address}/cubic@{w.session['hash']}"),
                    ("service", "app"),
                ),
            ),
        )
        assert claims["config_hash"] == released.config_hash
        assert claims["enclave_keys"]["ed25519"] == keys.ed25519_public.hex()
        assert claims["status"] == "warning"  # simulation is never better

        again = w.attest(EnclaveKeys.generate())  # a second enclave: the same output key
        assert {v["name"]: v["key"] for v in again.config["volumes"]}["output"] == (
            volumes["output"]["key"]
        )
        reader = w.attest(EnclaveKeys.generate(), service="reader")
        assert [v["name"] for v in reader.config["volumes"]] == ["input"]
        assert reader.config["environment"] == {}  # only what its service references


def test_a_service_with_more_secrets_and_volumes_than_one_read_holds(
    tmp_path: Path, database_url: str
) -> None:
    """The plan reads secrets 32 to a statement and the grant rechecks them likewise: 70
    secrets (given and generated, across three statements) and 40 volumes all arrive."""
    names = [f"s{i:02d}" for i in range(70)]
    volumes = [f"v{i:02d}" for i in range(40)]
    environment = "".join(f'      {n.upper()}: "$$confide:secrets:{n}$$"\n' for n in names)
    declared = "".join(
        f'  - name: {n}\n    kind: ascii\n    value: "value-of-{n}"\n'
        if i % 2 == 0
        else f"  - name: {n}\n    kind: key\n"
        for i, n in enumerate(names)
    )
    session = (
        f'name: cubic\nversion: "1"\nservices:\n  - name: app\n'
        f'    measurements: ["{APP}"]\n    command: python3 /app/app.py\n'
        f"    environment:\n{environment}    volumes: [{', '.join(volumes)}]\n"
        f"volumes:\n"
        + "".join(f"  - name: {v}\n    mode: output\n" for v in volumes)
        + f"secrets:\n{declared}security:\n  tolerate: [simulation]\n"
    )
    with world(tmp_path, database_url, session=session) as w:
        first = w.attest(EnclaveKeys.generate()).config
        again = w.attest(EnclaveKeys.generate()).config  # keys found, rechecked, not made
    env = first["environment"]
    assert sorted(env) == sorted(n.upper() for n in names)
    assert all(env[n.upper()] == f"value-of-{n}" for n in names[::2])
    assert all(len(env[n.upper()]) == 64 for n in names[1::2])  # generated keys, hex
    assert again["environment"] == env
    keys = {v["name"]: v["key"] for v in first["volumes"]}
    assert sorted(keys) == volumes and len(set(keys.values())) == 40
    assert {v["name"]: v["key"] for v in again["volumes"]} == keys


def test_an_output_volume_is_not_pushed(tmp_path: Path, database_url: str) -> None:
    """Its key is the sms's and its tags an attested writer's: not even the owner sets
    them (a known key, or a tag of a volume the owner made, would defeat both)."""
    with world(tmp_path, database_url) as w:
        path = f"/v1/sessions/{OWNER.address}/cubic/volumes/output"
        with pytest.raises(ConfideError, match=r"403.*is an output volume"):
            w.owner.call_json("PUT", path, {"key": "22" * 32, "tag": "cc" * 32}, signed=True)
        push_input(w, b"\x11" * 32, "aa" * 32)
        output = next(
            v for v in w.attest(EnclaveKeys.generate()).config["volumes"] if v["name"] == "output"
        )
        assert output["key"] != "22" * 32 and output["tag"] is None


def test_a_tag_report_racing_a_session_update_is_refused(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session is updated after the report's checks read it current, before its
    write: the write's own recheck, under the audit log's lock, refuses it."""
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        keys = EnclaveKeys.generate()
        w.attest(keys)
        updated = SESSION.replace('version: "1"', f'version: "2"\npredecessor: {w.session["hash"]}')
        original = VolumeTags._append

        def update_first(self: VolumeTags, *args: Any, **kwargs: Any) -> Any:
            # (on the server's database thread: the store, not a request that would wait
            # for that thread)
            self.sms.sessions.update(
                OWNER.address, OWNER.address, parse_session(updated, {}), int(time.time())
            )
            return original(self, *args, **kwargs)

        monkeypatch.setattr(VolumeTags, "_append", update_first)
        answer = report_tag(w, keys, "output", None, "01" * 32)
        assert answer.status_code == 403
        assert "was updated while the tag was reported" in answer.json()["detail"]
        monkeypatch.undo()
        history = w.owner.call_json(
            "GET", f"/v1/sessions/{OWNER.address}/cubic/volumes/output/tags", None, signed=True
        )
        assert history["tags"] == []


def test_an_enclave_of_a_replaced_version_is_refused(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        w.attest(EnclaveKeys.generate())  # the sms has read version 1 (and keeps it)
        updated = SESSION.replace('version: "1"', f'version: "2"\npredecessor: {w.session["hash"]}')
        w.owner.update_session(OWNER.address, "cubic", updated, {}, "cubic.yml")
        with pytest.raises(AuthError, match=r"403.*version [0-9a-f]{64} is no longer current"):
            w.attest(EnclaveKeys.generate())


def test_refusals_name_their_reason(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)

        def refused(match: str, **kwargs: Any) -> None:
            with pytest.raises(AuthError, match=match):
                w.attest(EnclaveKeys.generate(), **kwargs)

        refused(
            r"403.*measurement sim:cdcd…dcd not allowed",
            measurement=Measurement.parse("sim:" + "cd" * 32),
        )
        refused(r"403.*service 'ghost' is not in session", service="ghost")
        refused(r"403.*has no current version " + "0" * 64, target=w.target(hash="0" * 64))
        refused(r"403.*cubic has no current version", target=w.target(owner=OTHER.address))
        refused(r"403.*nope has no current version", target=w.target(name="nope"))

        # Evidence bound to another session hash, sent for this one.
        client = SmsClient(w.base)
        nonce = client.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
        keys = EnclaveKeys.generate()
        from confide.attestation.verifier import EnclaveBinding

        other = EnclaveBinding(
            keys.x25519_public, keys.ed25519_public, "sms-test", "f" * 64, "app", "host-1"
        )
        evidence = SimAttester(w.platform, APP).evidence(other.report_data(bytes.fromhex(nonce)))
        request = {
            "evidence": {"tee": "sim", "data": base64.b64encode(evidence.data).decode()},
            "nonce": nonce,
            "x25519_public": keys.x25519_public.hex(),
            "ed25519_public": keys.ed25519_public.hex(),
            "service": "app",
            "worker": "host-1",
            **w.target(),
        }
        answer = httpx.post(w.base + "/v1/attest", json=request)
        assert answer.status_code == 403 and "report data does not match" in answer.text
        replay = httpx.post(w.base + "/v1/attest", json=request)  # the nonce is used up
        assert replay.status_code == 403 and "nonce unknown or already used" in replay.text

        # An unregistered platform key.
        w.platform = SigningKey.generate()
        refused(r"403.*not registered")

        for bad in (
            b"{",
            b"[]",
            json.dumps({**request, "extra": 1}).encode(),
            json.dumps({**request, "nonce": "zz"}).encode(),
        ):
            response = httpx.post(w.base + "/v1/attest", content=bad)
            assert response.status_code == 400, bad
            assert response.headers["content-type"] == "application/problem+json"
        huge = httpx.post(w.base + "/v1/attest", content=b"x" * (300 * 1024))
        assert huge.status_code == 413


def test_simulation_refused_unless_the_sms_and_the_session_allow_it(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url, allow_sim=False) as w:
        info = w.owner.info()
        assert info["allow_sim"] is False and "sim" not in info["attestation_backends"]
        push_input(w, b"\x11" * 32, "aa" * 32)
        with pytest.raises(AuthError, match="simulation evidence refused"):
            w.attest(EnclaveKeys.generate(), service="reader")


def test_simulation_refused_unless_the_session_tolerates_it(
    tmp_path: Path, database_url: str
) -> None:
    strict = SESSION.replace("tolerate: [simulation]", "tolerate: []")
    with world(tmp_path, database_url, session=strict) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        with pytest.raises(AuthError, match="simulation TEE not tolerated"):
            w.attest(EnclaveKeys.generate(), service="reader")


def test_an_input_volume_needs_its_key_first(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        with pytest.raises(AuthError, match="input volume 'input' has no key yet"):
            w.attest(EnclaveKeys.generate())
        with pytest.raises(AuthError, match="403"):  # another wallet may not push it
            SmsClient(w.base, wallet=OTHER).call_json(
                "PUT",
                f"/v1/sessions/{OWNER.address}/cubic/volumes/input",
                {"key": "22" * 32, "tag": "bb" * 32},
                signed=True,
            )


def test_only_the_pinned_sms_and_the_enclave_can_use_a_grant(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        client = SmsClient(w.base)
        keys = EnclaveKeys.generate()
        nonce_hex = client.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
        nonce = bytes.fromhex(nonce_hex)
        from confide.attestation.verifier import EnclaveBinding

        digest = w.session["hash"]
        subject = f"{OWNER.address}/cubic@{digest}"
        binding = EnclaveBinding(
            keys.x25519_public, keys.ed25519_public, "sms-test", subject, "app", "host-1"
        )
        evidence = SimAttester(w.platform, APP).evidence(binding.report_data(nonce))
        answer = client.call_json(
            "POST",
            "/v1/attest",
            {
                "evidence": {"tee": "sim", "data": base64.b64encode(evidence.data).decode()},
                "nonce": nonce_hex,
                "x25519_public": keys.x25519_public.hex(),
                "ed25519_public": keys.ed25519_public.hex(),
                "service": "app",
                "worker": "host-1",
                **w.target(),
            },
            signed=False,
        )
        assert API_KEY not in json.dumps(answer)
        context: dict[str, Any] = {
            "sms_id": "sms-test",
            "subject": subject,
            "service": "app",
            "nonce": nonce,
        }
        released = open_grant(answer, keys, sms_key=sms_key(w.owner), **context)
        assert released.config["environment"]["API_KEY"] == API_KEY
        with pytest.raises(AttestationError, match="not signed by the pinned sms key"):
            open_grant(answer, keys, sms_key=SigningKey.generate().public_bytes(), **context)
        with pytest.raises(AttestationError, match="does not open"):
            open_grant(answer, EnclaveKeys.generate(), sms_key=sms_key(w.owner), **context)
        with pytest.raises(AttestationError, match="not signed by the pinned sms key"):
            open_grant(answer, keys, sms_key=sms_key(w.owner), **{**context, "service": "x"})
        with pytest.raises(AttestationError, match=r"not for it \(worker\)"):
            open_grant(answer, keys, sms_key=sms_key(w.owner), **context, worker="host-2")


def test_enclave_keys_attest_once(tmp_path: Path, database_url: str) -> None:
    """The challenge reaches the enclave through the host: keys that attested before could
    be answered with a recorded old challenge and its configuration (an expired token, an
    old expected tag), so the enclave refuses to attest with them again."""
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        keys = EnclaveKeys.generate()
        assert w.attest(keys).config["environment"]["API_KEY"] == API_KEY
        with pytest.raises(AttestationError, match="attested before: make new keys"):
            w.attest(keys)
        assert w.attest(EnclaveKeys.generate()).config["environment"]["API_KEY"] == API_KEY


def test_volume_tags_compare_and_swap(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        keys = EnclaveKeys.generate()
        w.attest(keys)
        first, second = "01" * 32, "02" * 32
        assert report_tag(w, keys, "output", None, first).status_code == 201
        replay = report_tag(w, keys, "output", None, first)
        assert replay.status_code == 409 and "not the current tag" in replay.text
        assert report_tag(w, keys, "output", first, second).status_code == 201
        rollback = report_tag(w, keys, "output", first, "03" * 32)
        assert rollback.status_code == 409 and f"current tag {second}" in rollback.text
        back = report_tag(w, keys, "output", second, first)  # back to an old tag
        assert back.status_code == 409 and "would be a rollback" in back.text

        stranger = EnclaveKeys.generate()  # never attested
        answer = report_tag(w, stranger, "output", second, "04" * 32)
        assert answer.status_code == 403 and "no current attestation" in answer.text
        reader = EnclaveKeys.generate()
        w.attest(reader, service="reader")
        answer = report_tag(w, reader, "output", second, "04" * 32)
        assert answer.status_code == 403 and "not one of its output volumes" in answer.text
        answer = report_tag(w, keys, "input", "aa" * 32, "04" * 32)
        assert answer.status_code == 403
        forged = report_tag(w, keys, "output", second, "05" * 32)
        body = json.loads(forged.request.content)
        body["tag"] = "06" * 32  # signature covers "05…"
        answer = httpx.post(str(forged.request.url), json=body)
        assert forged.status_code == 201
        assert answer.status_code == 403 and "not signed by the attested enclave" in answer.text

        history = w.owner.call_json(
            "GET", f"/v1/sessions/{OWNER.address}/cubic/volumes/output/tags", None, signed=True
        )
        assert [t["tag"] for t in history["tags"]] == [first, second, "05" * 32]
        shown = w.owner.session(OWNER.address, "cubic")
        assert {v["name"]: v["tag"] for v in shown["volumes"]} == {
            "input": "aa" * 32,
            "output": "05" * 32,
        }
        with pytest.raises(AuthError, match="403"):
            SmsClient(w.base, wallet=OTHER).call_json(
                "GET",
                f"/v1/sessions/{OWNER.address}/cubic/volumes/output/tags",
                None,
                signed=True,
            )


def test_every_attestation_is_audited_without_values(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        w.attest(EnclaveKeys.generate())
        with pytest.raises(AuthError):
            w.attest(EnclaveKeys.generate(), service="ghost")
    engine = make_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(audit_log.c.action, audit_log.c.detail)).all()
    engine.dispose()
    actions = [row.action for row in rows]
    assert "attest.granted" in actions and "attest.refused" in actions
    text = json.dumps([row.detail for row in rows])
    assert API_KEY not in text and "11" * 32 not in text
    granted = json.loads(next(r.detail for r in rows if r.action == "attest.granted"))
    assert any(label.startswith("session/cubic@") for label in granted["released"])


def test_platform_registration(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        again = w.owner.register_platform(w.platform)
        assert again["created"] is False and again["owner"] == OWNER.address
        with pytest.raises(ConfideError, match=r"409.*another wallet"):
            SmsClient(w.base, wallet=OTHER).register_platform(w.platform)
        key = {"platform_key": w.platform.public_bytes().hex()}
        unsigned = httpx.post(w.base + "/v1/platforms", json=key)
        assert unsigned.status_code == 401


def test_an_sms_without_sim_registers_no_platform(tmp_path: Path, database_url: str) -> None:
    """Without --allow-sim no sim evidence is accepted, so no wallet may add a (lasting)
    platform row either."""
    with world(tmp_path, database_url, allow_sim=False) as w:
        with pytest.raises(ConfideError, match=r"403.*without --allow-sim"):
            w.owner.register_platform(SigningKey.generate())
        with make_engine(database_url).connect() as connection:
            rows = connection.execute(select(func.count()).select_from(sim_platforms)).scalar()
        assert rows == 0


def test_only_a_holder_of_a_platform_key_can_register_it(tmp_path: Path, database_url: str) -> None:
    """A wallet that has only seen a platform's public key (in evidence, say) cannot
    register it first: the registration carries the key's signature over the wallet and
    this sms's audience."""
    with world(tmp_path, database_url) as w:
        victim = SigningKey.generate()
        seen = victim.public_bytes().hex()
        other = SmsClient(w.base, wallet=OTHER)
        audience = str(other.info()["audience"])
        with pytest.raises(ConfideError, match=r"400.*platform_key.*proof"):
            other.call_json("POST", "/v1/platforms", {"platform_key": seen}, signed=True)
        forged = registration_proof(SigningKey.generate(), OTHER.address, audience).hex()
        with pytest.raises(ConfideError, match=r"400.*not the platform key's signature"):
            other.call_json(
                "POST", "/v1/platforms", {"platform_key": seen, "proof": forged}, signed=True
            )
        # a proof the key's holder made for its own wallet does not register it for another
        owners = registration_proof(victim, OWNER.address, audience).hex()
        with pytest.raises(ConfideError, match=r"400.*not the platform key's signature"):
            other.call_json(
                "POST", "/v1/platforms", {"platform_key": seen, "proof": owners}, signed=True
            )
        # nor one made for another sms
        elsewhere = registration_proof(victim, OTHER.address, audience + "x").hex()
        with pytest.raises(ConfideError, match=r"400.*not the platform key's signature"):
            other.call_json(
                "POST", "/v1/platforms", {"platform_key": seen, "proof": elsewhere}, signed=True
            )
        assert w.owner.register_platform(victim)["owner"] == OWNER.address


def test_a_real_sgx_quote_is_verified_by_the_service(tmp_path: Path, database_url: str) -> None:
    """Intel's sample quote, through the sms, at the collateral's time: everything checks
    out (signature, chain to Intel's root, TCB with the session's tolerations, MRENCLAVE)
    except the report data, which was not made for this nonce: exactly that is refused."""
    session = f"""
name: hw
version: "1"
services:
  - name: app
    measurements: ["sgx:{SGX_MR_ENCLAVE}"]
    command: ./app
security:
  tolerate: [sw-hardening-needed, configuration-needed, hyperthreading]
  ignore_advisories: [INTEL-SA-00289, INTEL-SA-00615]
"""
    clock = lambda: float(SGX.now)  # noqa: E731
    with running_sms(
        tmp_path / "sms", database_url, clock=clock, collateral=SGX.collateral
    ) as base:
        owner = SmsClient(base, wallet=OWNER, clock=clock)
        assert owner.info()["attestation_backends"] == ["sgx", "tdx"]
        created = owner.create_session(session, {}, "hw.yml")
        nonce = owner.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
        keys = EnclaveKeys.generate()
        request = {
            "evidence": {"tee": "sgx", "data": base64.b64encode(SGX.quote.read_bytes()).decode()},
            "nonce": nonce,
            "x25519_public": keys.x25519_public.hex(),
            "ed25519_public": keys.ed25519_public.hex(),
            "service": "app",
            "worker": "",
            "session": {"owner": OWNER.address, "name": "hw", "hash": created["hash"]},
        }
        answer = httpx.post(base + "/v1/attest", json=request)
        assert answer.status_code == 403
        detail = answer.json()["detail"]
        assert detail == (
            "attestation refused: report data does not match: evidence is bound to other "
            "keys, nonce, session, service or worker"
        )
        tampered = bytearray(SGX.quote.read_bytes())
        tampered[200] ^= 1
        nonce = owner.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
        request = {
            **request,
            "nonce": nonce,
            "evidence": {"tee": "sgx", "data": base64.b64encode(tampered).decode()},
        }
        answer = httpx.post(base + "/v1/attest", json=request)
        assert answer.status_code == 403 and "report data" not in answer.json()["detail"]


def test_a_real_tdx_quote_is_verified_against_the_sessions_pins(
    tmp_path: Path, database_url: str
) -> None:
    """Intel's sample TD quote, through the sms: a session that pins the TD's MRTD, RTMR1
    and RTMR2 passes every check but the report data (not made for this nonce); one that
    pins another kernel (RTMR2) is refused for that too, by name."""

    def session(name: str, rtmr2: str) -> str:
        return f"""
name: {name}
version: "1"
services:
  - name: app
    measurements: ["tdx:{TDX_MR_TD}"]
    tdx: {{rtmr1: "{TDX_RTMR1}", rtmr2: "{rtmr2}"}}
    command: ./app
security:
  tolerate: [hyperthreading]
"""

    clock = lambda: float(TDX.now)  # noqa: E731
    with running_sms(
        tmp_path / "sms", database_url, clock=clock, collateral=TDX.collateral
    ) as base:
        owner = SmsClient(base, wallet=OWNER, clock=clock)
        pinned = owner.create_session(session("td", TDX_RTMR2), {}, "td.yml")
        assert pinned["services"][0]["tdx"] == {"rtmr1": TDX_RTMR1, "rtmr2": TDX_RTMR2}
        other = owner.create_session(session("td-other", "ab" * 48), {}, "td-other.yml")
        details = []
        for name, created in (("td", pinned), ("td-other", other)):
            nonce = owner.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
            keys = EnclaveKeys.generate()
            quote = base64.b64encode(TDX.quote.read_bytes()).decode()
            request = {
                "evidence": {"tee": "tdx", "data": quote},
                "nonce": nonce,
                "x25519_public": keys.x25519_public.hex(),
                "ed25519_public": keys.ed25519_public.hex(),
                "service": "app",
                "worker": "",
                "session": {"owner": OWNER.address, "name": name, "hash": created["hash"]},
            }
            answer = httpx.post(base + "/v1/attest", json=request)
            assert answer.status_code == 403
            details.append(answer.json()["detail"])
    binding = (
        "report data does not match: evidence is bound to other keys, nonce, session, "
        "service or worker"
    )
    assert details[0] == f"attestation refused: {binding}"
    assert details[1].startswith("attestation refused: ")
    assert "RTMR2 does not match the policy" in details[1] and "RTMR1" not in details[1]


def test_concurrent_attestations_are_recorded_in_batches_each_answered(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve enclaves attest at once over HTTP, two of them with one nonce: the grants
    are recorded several to a transaction, each request gets its own answer (eleven
    sealed configurations, each opened by its own enclave, and one replay refused),
    and the audit chain holds."""
    sizes: list[int] = []
    commit = Attestations.commit

    def counted(self: Attestations, pending: Any, moved: Any = None) -> Any:
        sizes.append(len(pending))
        return commit(self, pending, moved)

    monkeypatch.setattr(Attestations, "commit", counted)
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        info = w.owner.info()
        subject = f"{OWNER.address}/cubic@{w.session['hash']}"
        attester = SimAttester(w.platform, APP)
        prepared: list[tuple[EnclaveKeys, bytes, dict[str, Any]]] = []
        for _ in range(11):
            nonce = bytes.fromhex(httpx.post(f"{w.base}/v1/attest/challenge").json()["nonce"])
            keys = EnclaveKeys.generate()
            binding = EnclaveBinding(
                keys.x25519_public,
                keys.ed25519_public,
                str(info["sms_id"]),
                subject,
                "app",
                "host-1",
            )
            data = attester.evidence(binding.report_data(nonce)).data
            body = {
                "evidence": {"tee": "sim", "data": base64.b64encode(data).decode()},
                "nonce": nonce.hex(),
                "x25519_public": keys.x25519_public.hex(),
                "ed25519_public": keys.ed25519_public.hex(),
                "service": "app",
                "worker": "host-1",
                **w.target(),
            }
            prepared.append((keys, nonce, body))
        prepared.append(prepared[0])  # a replay of the first, sent with the others
        meeting = threading.Barrier(len(prepared), timeout=30)

        def send(body: dict[str, Any]) -> httpx.Response:
            meeting.wait()
            return httpx.post(f"{w.base}/v1/attest", json=body, timeout=30)

        with ThreadPoolExecutor(len(prepared)) as pool:
            answers = list(pool.map(send, [body for _, _, body in prepared]))
        statuses = [a.status_code for a in answers]
        assert sorted(statuses) == [200] * 11 + [403], statuses
        refused = next(a for a in answers if a.status_code == 403)
        assert "nonce unknown or already used" in refused.json()["detail"]
        for (keys, nonce, _), answer in zip(prepared[1:11], answers[1:11], strict=True):
            released = open_grant(
                answer.json(),
                keys,
                sms_key=sms_key(w.owner),
                sms_id=str(info["sms_id"]),
                subject=subject,
                service="app",
                nonce=nonce,
            )
            assert released.config["environment"]["API_KEY"] == API_KEY
        assert max(sizes) > 1, sizes  # several grants shared a transaction
        with make_engine(database_url).connect() as connection:
            actions = [r.action for r in connection.execute(select(audit_log.c.action))]
            assert actions.count("attest.granted") == 11 and "attest.refused" not in actions
            assert verify_chain(connection) == len(actions)
