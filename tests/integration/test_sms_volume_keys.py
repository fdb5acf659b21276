"""A session volume's key released to its readers, through a real sms on SQLite and
PostgreSQL: sealed to the reader's one-time key and signed for exactly that context, with
a storage grant for the version's blob and an audit entry; refused to others without an
entry; and the key of a push that lost its compare-and-swap is never the one released."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select

from confide.client.sms import SmsClient
from confide.crypto.info_proof import jwks_key
from confide.crypto.volume_release import VolumeRelease, open_release
from confide.crypto.wallet import Wallet
from confide.db import make_engine
from confide.db.schema import audit_log
from confide.errors import ConfideError
from confide.grants import check_grant
from confide.sms.service import Sms, SmsConfig
from confide.sms.session_document import parse_session
from confide.sms.volume_keys import VolumeKeys
from confide.sms.volumes import VolumeTags
from tests.integration.sms_server import running_sms

OWNER, READER, OUTSIDER = (Wallet.generate() for _ in range(3))
SESSION = f"""\
name: copy
version: "1"
predecessor: null
access_policy: {{read: [owner, {READER.address}], update: [owner]}}
services:
  - name: copy
    measurements: ["sim:{"ab" * 32}"]
    command: /app/copy
    volumes: [inputs]
volumes:
  - {{name: inputs, mode: input}}
"""


def reader_key() -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def opened(
    client: SmsClient, owner: str, answer: dict[str, object], reader: tuple[X25519PrivateKey, bytes]
) -> bytes:
    info = client.info()
    release = VolumeRelease(
        str(info["audience"]),
        owner,
        "copy",
        "inputs",
        str(answer["tag"]),
        str(answer["blob"] or ""),
        reader[1],
    )
    sealed, signature = (bytes.fromhex(str(answer[k])) for k in ("sealed_key", "signature"))
    return open_release(release, sealed, signature, jwks_key(info["jwks"]), reader[0])


def test_readers_get_the_current_key_sealed_and_signed(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        owner = SmsClient(base, wallet=OWNER, trust_dir=tmp_path / "o")
        reader = SmsClient(base, wallet=READER, trust_dir=tmp_path / "r")
        outsider = SmsClient(base, wallet=OUTSIDER, trust_dir=tmp_path / "x")
        owner.create_session(SESSION, {}, "copy.yml")
        me = OWNER.address.lower()
        early = reader.call_json(
            "POST",
            f"/v1/sessions/{me}/copy/volumes/inputs/key",
            {"public_key": "11" * 32},
            signed=True,
            accept=(404,),
        )
        assert early is None
        key1, tag1, blob1 = os.urandom(32), "a1" * 32, hashlib.sha256(b"v1").hexdigest()
        owner.push_volume(me, "copy", "inputs", key=key1, previous_tag=None, tag=tag1, blob=blob1)
        for client, wallet in ((owner, OWNER), (reader, READER)):
            pair = reader_key()
            answer = client.volume_key(me, "copy", "inputs", pair[1])
            assert (answer["tag"], answer["blob"]) == (tag1, blob1)
            assert opened(client, me, answer, pair) == key1
            info = client.info()
            grant = check_grant(
                str(answer["grant"]),
                issuers={str(info["audience"]): jwks_key(info["jwks"])},
                digest=blob1,
                grantee=wallet.address.lower(),
                now=time.time(),
            )
            assert grant.uploader == me
        # Another reader's key, or a replaced tag, opens nothing.
        pair = reader_key()
        answer = reader.volume_key(me, "copy", "inputs", pair[1])
        with pytest.raises(Exception, match=r"not signed|does not open"):
            opened(reader, me, answer, reader_key())
        with pytest.raises(Exception, match="not signed"):
            opened(reader, me, {**answer, "tag": "b2" * 32}, pair)
        # A wallet the access policy does not name is refused and leaves no entry.
        engine = make_engine(database_url)
        with engine.connect() as connection:
            before = connection.execute(select(audit_log.c.seq)).all()
        with pytest.raises(Exception, match="copy"):
            outsider.volume_key(me, "copy", "inputs", reader_key()[1])
        with engine.connect() as connection:
            entries = connection.execute(
                select(audit_log.c.action, audit_log.c.actor).order_by(audit_log.c.seq)
            ).all()
        assert len(entries) == len(before)
        releases = [actor for action, actor in entries if action == "volume.key"]
        assert releases == [me, READER.address.lower(), READER.address.lower()]
        # A public key that is not one: 400, named.
        with pytest.raises(Exception, match="public_key"):
            reader.call_json(
                "POST",
                f"/v1/sessions/{me}/copy/volumes/inputs/key",
                {"public_key": "zz"},
                signed=True,
            )
        engine.dispose()


def test_the_losing_push_leaves_no_key(tmp_path: Path, database_url: str) -> None:
    """Two pushes from the same version: one wins; the key released afterwards is the
    winner's, never the loser's (its key was not kept either)."""
    with running_sms(tmp_path / "sms", database_url) as base:
        owner = SmsClient(base, wallet=OWNER, trust_dir=tmp_path / "o")
        owner.create_session(SESSION, {}, "copy.yml")
        me = OWNER.address.lower()
        first = os.urandom(32)
        owner.push_volume(
            me, "copy", "inputs", key=first, previous_tag=None, tag="c0" * 32, blob=None
        )
        pushes = [(os.urandom(32), f"{i:02x}" * 32) for i in (0xD1, 0xD2, 0xD3, 0xD4)]

        def push(entry: tuple[bytes, str]) -> str:
            try:
                owner.push_volume(
                    me,
                    "copy",
                    "inputs",
                    key=entry[0],
                    previous_tag="c0" * 32,
                    tag=entry[1],
                    blob=None,
                )
            except ConfideError as exc:  # a loser: said why
                return str(exc)
            return "won"

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(push, pushes))
        assert outcomes.count("won") == 1, outcomes
        assert all("(409)" in o for o in outcomes if o != "won"), outcomes
        won = [o == "won" for o in outcomes]
        winner = pushes[won.index(True)]
        pair = reader_key()
        answer = owner.volume_key(me, "copy", "inputs", pair[1])
        assert answer["tag"] == winner[1] and answer["blob"] is None and answer["grant"] is None
        assert opened(owner, me, answer, pair) == winner[0]


def test_the_route_needs_a_signature(tmp_path: Path, database_url: str) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        me = OWNER.address.lower()
        answer = httpx.post(
            f"{base}/v1/sessions/{me}/copy/volumes/inputs/key", json={"public_key": "11" * 32}
        )
        assert answer.status_code == 401


def test_a_push_between_the_reads_of_a_release_is_seen(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push that commits while a release reads the tag and then the key: the release
    reads again, and the key it seals is the one of the tag it signs."""
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="t"))
    me = OWNER.address.lower()
    sms.sessions.create(me, parse_session(SESSION, {}), 1)
    tags, keys = VolumeTags(sms), VolumeKeys(sms)
    key1, key2 = os.urandom(32), os.urandom(32)
    tags.push(
        caller=me,
        owner=me,
        session="copy",
        volume="inputs",
        key=key1,
        previous=None,
        tag="e1" * 32,
        now=2,
    )
    original = sms.secrets.latest
    pushed: list[bool] = []

    def latest_after_a_push(*args: Any, **kwargs: Any) -> tuple[int, bytes]:
        if not pushed:  # another writer commits between the tag's read and the key's
            pushed.append(True)
            tags.push(
                caller=me,
                owner=me,
                session="copy",
                volume="inputs",
                key=key2,
                previous="e1" * 32,
                tag="e2" * 32,
                now=3,
            )
        return original(*args, **kwargs)

    monkeypatch.setattr(sms.secrets, "latest", latest_after_a_push)
    private, public = reader_key()
    released = keys.release(
        caller=me, owner=me, session="copy", volume="inputs", reader_public=public, now=4
    )
    # SQLite reads one snapshot (the version before the push, whole); PostgreSQL reads
    # committed rows, sees the tag move, and reads again (the version after it).
    assert pushed
    expected = {"e1" * 32: key1, "e2" * 32: key2}[released.release.tag]
    signature_key = sms.tokens.public_key()
    key = open_release(
        released.release, released.sealed, released.signature, signature_key, private
    )
    assert key == expected
    sms.engine.dispose()


def test_every_version_brings_its_own_key(tmp_path: Path, database_url: str) -> None:
    """A push without a key is refused: a new version never inherits the key an older
    version's readers hold."""
    with running_sms(tmp_path / "sms", database_url) as base:
        owner = SmsClient(base, wallet=OWNER, trust_dir=tmp_path / "o")
        owner.create_session(SESSION, {}, "copy.yml")
        me = OWNER.address.lower()
        path = f"/v1/sessions/{me}/copy/volumes/inputs"
        with pytest.raises(ConfideError, match="brings its own key"):
            owner.call_json("PUT", path, {"tag": "f1" * 32}, signed=True)
        assert owner.volume_tags(me, "copy", "inputs") == []
