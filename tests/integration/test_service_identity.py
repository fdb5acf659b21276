"""A service's deployment id and signing key: made once, shared by the replicas on one
database, and a replica with its own refused at start naming what differs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from confide.db import make_engine, upgrade
from confide.db.identity import load_identity
from confide.errors import ConfideError


def test_a_first_start_makes_both_and_a_restart_keeps_them(
    tmp_path: Path, database_url: str
) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    deployment, key = load_identity(engine, "hub", tmp_path / "a")
    assert deployment.startswith("d-")
    assert stat.S_IMODE((tmp_path / "a" / "signing-key").stat().st_mode) == 0o600
    again, same = load_identity(engine, "hub", tmp_path / "a")
    assert (again, same.public_bytes()) == (deployment, key.public_bytes())
    # Another service on the same database keeps identities of its own.
    other, other_key = load_identity(engine, "storage", tmp_path / "b")
    assert other != deployment and other_key.public_bytes() != key.public_bytes()
    engine.dispose()


def test_a_replica_with_another_key_or_deployment_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    deployment, _ = load_identity(engine, "hub", tmp_path / "first")
    with pytest.raises(ConfideError, match=r"signing key .* --signing-key FILE"):
        load_identity(engine, "hub", tmp_path / "second")  # the recorded id, its own key
    shared = tmp_path / "first" / "signing-key"
    with pytest.raises(ConfideError, match=f"deployment id {deployment}.* --deployment"):
        load_identity(engine, "hub", tmp_path / "third", deployment_id="d-other", key_file=shared)
    found, _ = load_identity(engine, "hub", tmp_path / "fourth", key_file=shared)
    assert found == deployment  # a replica given the key takes the recorded id
    bad = tmp_path / "bad-key"
    bad.write_text("not hex\n")
    with pytest.raises(ConfideError, match="64 hex digits"):
        load_identity(engine, "hub", tmp_path / "fifth", key_file=bad)
    with pytest.raises(ConfideError, match="cannot read the key"):
        load_identity(engine, "hub", tmp_path / "sixth", key_file=tmp_path / "absent")
    engine.dispose()
