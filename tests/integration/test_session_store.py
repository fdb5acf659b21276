"""CAS sessions on real SQLite and PostgreSQL: namespaces, access, compare-and-swap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from confide.crypto.envelope import KeyEncryptionKey
from confide.db import make_engine, upgrade
from confide.errors import SessionError
from confide.sms.secrets import SecretRef, SecretStore
from confide.sms.session_document import parse_session
from confide.sms.sessions import (
    SessionConflictError,
    SessionForbiddenError,
    SessionNotFoundError,
    SessionStore,
    successor_exists,
)

NOW = 1_800_000_000
ALICE, BOB, CAROL = ("0x" + c * 20 for c in ("a1", "b2", "c3"))
TEXT = (
    """\
name: cubic
version: "1"
predecessor: PRED
access_policy: {read: [owner, BOB], update: [owner]}
services:
  - name: app
    measurements: ["sim:"""
    + "ab" * 32
    + """"]
    command: python3 app.py
    environment: {API_KEY: "$$confide:secrets:api_key$$"}
secrets:
  - {name: api_key, kind: ascii, value: "VERY-SECRET-VALUE"}
  - {name: generated, kind: key}
"""
)


def _doc(predecessor: str | None = None, command: str = "python3 app.py"):  # type: ignore[no-untyped-def]
    text = TEXT.replace("PRED", predecessor or "null").replace("BOB", BOB)
    return parse_session(text.replace("python3 app.py", command), {})


@pytest.fixture
def stores(database_url: str, tmp_path: Path) -> tuple[SessionStore, SecretStore, Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    secrets = SecretStore(engine, KeyEncryptionKey.load_or_create(tmp_path / "kek"))
    return SessionStore(engine, secrets), secrets, engine


def test_create_read_update_and_history(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, secrets, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    assert "VERY-SECRET-VALUE" not in str(first.document)
    assert store.current(ALICE, ALICE, "cubic").hash == first.hash
    assert store.current(BOB, ALICE, "cubic").hash == first.hash  # listed reader
    with pytest.raises(SessionForbiddenError, match="that you may read"):
        store.current(CAROL, ALICE, "cubic")
    with pytest.raises(SessionForbiddenError, match="may not update"):
        store.update(BOB, ALICE, _doc(first.hash, "python3 v2.py"), NOW + 1)
    second = store.update(ALICE, ALICE, _doc(first.hash, "python3 v2.py"), NOW + 1)
    assert [s.hash for s in store.history(ALICE, ALICE, "cubic")] == [first.hash, second.hash]
    ref = SecretRef(ALICE, "session", "api_key", subject=f"cubic@{second.hash[:16]}")
    assert secrets.latest(ref)[1] == b"VERY-SECRET-VALUE"
    generated = SecretRef(ALICE, "session", "generated", subject=f"cubic@{second.hash[:16]}")
    assert len(secrets.latest(generated)[1]) == 64
    original = SecretRef(ALICE, "session", "generated", subject=f"cubic@{first.hash[:16]}")
    assert secrets.latest(generated)[1] == secrets.latest(original)[1]  # carried forward


def test_a_generated_secret_declared_anew_gets_a_new_value(
    stores: tuple[SessionStore, SecretStore, Engine],
) -> None:
    store, secrets, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    renamed = TEXT.replace("{name: generated, kind: key}", "{name: generated2, kind: key}")
    text = renamed.replace("PRED", first.hash).replace("BOB", BOB)
    second = store.update(ALICE, ALICE, parse_session(text, {}), NOW + 1)
    before = SecretRef(ALICE, "session", "generated", subject=f"cubic@{first.hash[:16]}")
    after = SecretRef(ALICE, "session", "generated2", subject=f"cubic@{second.hash[:16]}")
    assert secrets.latest(before)[1] != secrets.latest(after)[1]


def test_stale_predecessor_and_duplicates(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, _, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    with pytest.raises(SessionConflictError, match="already exists"):
        store.create(ALICE, _doc(), NOW)
    store.update(ALICE, ALICE, _doc(first.hash, "python3 v2.py"), NOW + 1)
    with pytest.raises(SessionConflictError, match="is not the current hash") as info:
        store.update(ALICE, ALICE, _doc(first.hash, "python3 v3.py"), NOW + 2)
    assert first.hash in str(info.value)
    assert (
        store.current(ALICE, ALICE, "cubic").document["services"][0]["command"] == "python3 v2.py"
    )


def test_namespaces_prevent_squatting(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, _, _ = stores
    mine = store.create(ALICE, _doc(), NOW)
    theirs = store.create(BOB, _doc(), NOW)  # same name, another owner: another session
    assert mine.owner != theirs.owner
    with pytest.raises(SessionNotFoundError):
        store.current(CAROL, CAROL, "cubic")


def test_concurrent_updates_one_wins(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, _, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def updater(command: str) -> None:
        barrier.wait()
        try:
            store.update(ALICE, ALICE, _doc(first.hash, command), NOW + 1)
            outcomes.append("won")
        except SessionConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=updater, args=(f"python3 {n}.py",)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["lost", "won"]
    assert len(store.history(ALICE, ALICE, "cubic")) == 2


def test_the_loser_of_a_concurrent_update_learns_the_current_hash(
    stores: tuple[SessionStore, SecretStore, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race where both updates pass the predecessor check and the database's UNIQUE
    constraint picks the winner: the loser's conflict names the winner's hash (the docs
    promise it), in the message and as ``current_hash`` for the HTTP problem body."""
    store, _, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    write = store._write
    winner: list[str] = []

    def racing_write(*args: object, **kwargs: object) -> object:
        if not winner:  # the other update commits between the loser's check and write
            winner.append("")
            winner[0] = store.update(ALICE, ALICE, _doc(first.hash, "python3 a.py"), NOW + 1).hash
        return write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_write", racing_write)
    with pytest.raises(SessionConflictError, match="updated concurrently") as info:
        store.update(ALICE, ALICE, _doc(first.hash, "python3 b.py"), NOW + 1)
    assert winner[0] != first.hash
    assert info.value.current_hash == winner[0]
    assert winner[0] in str(info.value)
    with pytest.raises(SessionConflictError) as stale:
        store.update(ALICE, ALICE, _doc(first.hash, "python3 c.py"), NOW + 2)
    assert stale.value.current_hash == winner[0]


def test_a_session_you_may_not_read_answers_as_a_missing_one(
    stores: tuple[SessionStore, SecretStore, Engine],
) -> None:
    """Another owner's session name: the same error, word for word, whether it exists or
    not, for a read, its history and an update (403); existence does not leak. In the
    caller's own namespace a missing session is 404."""
    store, _, _ = stores

    def refusals() -> list[tuple[type[Exception], str]]:
        found: list[tuple[type[Exception], str]] = []
        for call in (
            lambda: store.current(CAROL, ALICE, "cubic"),
            lambda: store.history(CAROL, ALICE, "cubic"),
            lambda: store.update(CAROL, ALICE, _doc("0" * 64), NOW + 1),
        ):
            with pytest.raises(SessionForbiddenError) as info:
                call()
            found.append((type(info.value), str(info.value)))
        return found

    missing = refusals()
    store.create(ALICE, _doc(), NOW)
    assert refusals() == missing
    assert missing[0][1] == f"no session 'cubic' of {ALICE} that you may read"
    with pytest.raises(SessionForbiddenError, match="may not update"):  # BOB may read it
        store.update(BOB, ALICE, _doc("0" * 64), NOW + 1)
    with pytest.raises(SessionNotFoundError, match=f"no session 'other' of {CAROL} that"):
        store.current(CAROL, CAROL, "other")


def test_the_owner_is_never_locked_out(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    """An updater the policy names writes a policy without the owner: the owner may still
    read and update the session (the owner is always in both lists)."""
    store, _, _ = stores
    shared = TEXT.replace("update: [owner]", "update: [owner, BOB]")
    first = store.create(
        ALICE, parse_session(shared.replace("PRED", "null").replace("BOB", BOB), {}), NOW
    )
    locked = TEXT.replace("{read: [owner, BOB], update: [owner]}", "{read: [BOB], update: [BOB]}")
    text = locked.replace("PRED", first.hash).replace("BOB", BOB)
    second = store.update(BOB, ALICE, parse_session(text, {}), NOW + 1)
    assert second.document["access_policy"] == {"read": [BOB], "update": [BOB]}
    assert store.current(ALICE, ALICE, "cubic").hash == second.hash
    assert store.history(ALICE, ALICE, "cubic")[-1].hash == second.hash
    third = store.update(ALICE, ALICE, _doc(second.hash), NOW + 2)
    assert store.current(ALICE, ALICE, "cubic").hash == third.hash


VOLUMES = {
    "input": "volumes:\n  - {name: data, mode: input}\n",
    "output": "volumes:\n  - {name: data, mode: output}\n",
    "none": "",
}


def _with_volume(mode: str, predecessor: str | None):  # type: ignore[no-untyped-def]
    text = TEXT.replace("PRED", predecessor or "null").replace("BOB", BOB)
    return parse_session(text + VOLUMES[mode], {})


def test_a_volume_keeps_its_mode(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    """An input volume's key and tag are pushed by the owner; an output volume's are handed
    to the enclave that writes it. Turning an input into an output (directly, or by
    dropping the volume and declaring it again) would let the owner plant them."""
    store, _, _ = stores
    first = store.create(ALICE, _with_volume("input", None), NOW)
    with pytest.raises(SessionError, match=r"volume .data. .* is an input volume: its mode cannot"):
        store.update(ALICE, ALICE, _with_volume("output", first.hash), NOW + 1)
    dropped = store.update(ALICE, ALICE, _with_volume("none", first.hash), NOW + 1)
    with pytest.raises(SessionError, match="is an input volume"):
        store.update(ALICE, ALICE, _with_volume("output", dropped.hash), NOW + 2)
    again = store.update(ALICE, ALICE, _with_volume("input", dropped.hash), NOW + 2)
    assert store.current(ALICE, ALICE, "cubic").hash == again.hash
    other = store.create(BOB, _with_volume("output", None), NOW)  # its own session: free
    with pytest.raises(SessionError, match="is an output volume: its mode cannot change to input"):
        store.update(BOB, BOB, _with_volume("input", other.hash), NOW + 1)


def test_session_and_its_secrets_are_written_together(
    stores: tuple[SessionStore, SecretStore, Engine],
) -> None:
    store, secrets, _ = stores
    from confide.errors import SecretError

    huge = _doc().__class__(
        **{
            **_doc().__dict__,
            "secrets": tuple(
                s.__class__(s.name, s.kind, "x" * 70_000 if s.name == "generated" else s.value)
                for s in _doc().secrets
            ),
        }
    )
    with pytest.raises(SecretError, match="64 KiB"):
        store.create(ALICE, huge, NOW)
    with pytest.raises(SessionNotFoundError):
        store.current(ALICE, ALICE, "cubic")
    digest = huge.session_hash()
    assert not secrets.exists(
        SecretRef(ALICE, "session", "api_key", subject=f"cubic@{digest[:16]}")
    )


def test_current_version_is_only_the_head(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    """What attestation reads: the named version if no version follows it (the parsed
    document is kept per version; whether it is current is read every time)."""
    store, _, engine = stores
    first = store.create(ALICE, _doc(), NOW)
    found = store.current_version(ALICE, "cubic", first.hash)
    assert found is not None and found.document == first.document
    assert store.current_version(ALICE, "cubic", first.hash) is found  # kept
    assert store.current_version(BOB, "cubic", first.hash) is None  # another namespace
    assert store.current_version(ALICE, "other", first.hash) is None
    assert store.current_version(ALICE, "cubic", "0" * 64) is None
    second = store.update(ALICE, ALICE, _doc(first.hash, command="python3 v2.py"), NOW + 1)
    assert store.current_version(ALICE, "cubic", first.hash) is None  # no longer current
    head = store.current_version(ALICE, "cubic", second.hash)
    assert head is not None and head.predecessor == first.hash
    assert head.document == store.current(ALICE, ALICE, "cubic").document
    with engine.connect() as connection:
        for digest, superseded in ((first.hash, True), (second.hash, False)):
            params = {"owner": ALICE, "name": "cubic", "hash": digest}
            assert connection.execute(select(successor_exists()), params).scalar() is superseded
