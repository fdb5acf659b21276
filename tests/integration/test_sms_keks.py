"""Replicas behind one database must share the key-encryption key; rotation keeps the
old one readable through CONFIDE_KEK_PREVIOUS (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from confide.errors import ConfideError
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig

OWNER = "0x" + "a1" * 20


def _sms(home: Path, url: str, token_key: Path | None = None) -> Sms:
    return Sms(SmsConfig(home=home, db_url=url, deployment_id="t", token_key_file=token_key))


def test_a_replica_with_another_kek_refuses_to_start(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFIDE_KEK", raising=False)
    first = _sms(tmp_path / "host-a", database_url)
    ref = SecretRef(OWNER, "requester", "x1")
    first.secrets.put(ref, b"value", update=False, now=1)
    first.engine.dispose()
    old_kek = (tmp_path / "host-a" / "kek").read_text().strip()
    with pytest.raises(ConfideError, match=r"sealed under KEK id\(s\) k-.*same key-encryption"):
        _sms(tmp_path / "host-b", database_url)  # made its own KEK file

    monkeypatch.setenv("CONFIDE_KEK", "rotated:" + "42" * 32)
    monkeypatch.setenv("CONFIDE_KEK_PREVIOUS", old_kek)
    rotated = _sms(tmp_path / "host-b", database_url, tmp_path / "host-a" / "token-key")
    assert rotated.secrets.latest(ref)[1] == b"value"  # old secrets still open
    rotated.secrets.put(ref, b"new", update=True, now=2)  # new ones under the new KEK
    assert rotated.secrets.latest(ref) == (2, b"new")
    rotated.engine.dispose()
