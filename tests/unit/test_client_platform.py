"""Which sms a client uses with a hub (confide.client.platform), against a real hub and a
real sms on loopback: never one the hub chose, unless it is ``confide up``'s own or the
user trusted it; a changed sms key is refused; and the deterministic archive a bundle is
uploaded as."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from confide.client.archive import pack
from confide.client.hub import HubClient
from confide.client.known import check_not_older, recall, remember
from confide.client.pins import is_loopback_url, key_fingerprint, pin_name
from confide.client.platform import Platform
from confide.client.sms import SmsClient
from confide.crypto.wallet import Wallet
from confide.errors import AuthError, ConfideError
from confide.records import OwnerRecord, RecordError
from tests.integration.sms_server import free_port, running_sms
from tests.integration.test_hub_support import Clock, make_hub, running_hub


def test_the_hubs_sms_is_used_only_once_trusted(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    with running_sms(tmp_path / "sms", f"sqlite:///{tmp_path / 'sms.db'}") as sms_url:
        hub = make_hub(tmp_path / "hub", f"sqlite:///{tmp_path / 'hub.db'}", sms_url=sms_url)
        with running_hub(hub, Clock()) as caller:
            platform = Platform(caller.base, trust_dir=trust)
            with pytest.raises(AuthError, match=f"names the sms {sms_url}, which you have not"):
                _ = platform.sms
            assert not platform.embedded()  # it does not say so
            # Trusted (here by a first contact the user chose): then it is used.
            pinned: list[tuple[str, str]] = []
            direct = SmsClient(sms_url, trust_dir=trust, on_pin=lambda u, f: pinned.append((u, f)))
            fingerprint = direct.fingerprint()
            assert pinned == [(sms_url, fingerprint)]
            assert key_fingerprint(direct.key()) == fingerprint
            assert Platform(caller.base, trust_dir=trust).sms.base_url == sms_url
            # --sms overrides the hub's, whatever it names.
            named = Platform(caller.base, trust_dir=trust, sms_url="http://127.0.0.1:1")
            assert named.sms.base_url == "http://127.0.0.1:1"
            # The storage comes from the hub's info, or the option.
            with pytest.raises(ConfideError, match="names no storage"):
                _ = platform.storage
            chosen = Platform(caller.base, storage_url="http://127.0.0.1:2").storage
            assert chosen.base_url == "http://127.0.0.1:2"
            assert HubClient(caller.base).deployment() == "test"
    # Another sms at the same URL (another key): refused, naming the pin.
    other = SmsClient(sms_url, trust_dir=trust)
    path = other.pin_path()
    assert path is not None and path.exists()
    with running_sms(tmp_path / "sms2", f"sqlite:///{tmp_path / 'sms2.db'}") as second:
        moved = SmsClient(second, trust_dir=trust)
        second_pin = moved.pin_path()
        assert second_pin is not None
        second_pin.write_text(path.read_text())  # as if the key had changed at that URL
        with pytest.raises(AuthError, match="differ from the ones pinned"):
            moved.info()


def test_a_hub_that_cannot_be_reached_names_confide_up(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfideError, match=rf"cannot reach the hub at {url}.*confide up"):
        HubClient(url, retries=0).info()


def test_urls_and_pins() -> None:
    assert is_loopback_url("http://127.0.0.1:8088") and is_loopback_url("http://localhost")
    assert not is_loopback_url("https://sms.example.com")
    assert pin_name("HTTPS://SMS.example:443/") == pin_name("https://sms.example")
    with pytest.raises(AuthError, match="use https"):
        HubClient("http://hub.example.com")


def test_the_archive_is_deterministic_and_refuses_links(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "b").mkdir(parents=True)
    (tree / "b" / "x.txt").write_text("x")
    (tree / "a.txt").write_text("a")
    (tree / "caf\u00e9 \u2603").write_text("unicode")
    os.chmod(tree / "a.txt", 0o640)
    first = pack(tree, tmp_path / "one.tar")
    os.utime(tree / "a.txt", (1, 1))
    second = pack(tree, tmp_path / "two.tar")
    assert first.digest == second.digest == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.size == first.path.stat().st_size
    with tarfile.open(first.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["a.txt", "b", "b/x.txt", "caf\u00e9 \u2603"]
    assert members["a.txt"].mode == 0o640 and members["b"].isdir()
    (tree / "link").symlink_to("a.txt")
    with pytest.raises(ConfideError, match=r"link in .*only regular files"):
        pack(tree, tmp_path / "three.tar")
    with pytest.raises(ConfideError, match="is not a directory"):
        pack(tree / "a.txt", tmp_path / "four.tar")


def test_the_records_a_user_signed_are_kept_highest_first(tmp_path: Path) -> None:
    wallet = Wallet.generate()
    versions = [
        OwnerRecord.workerpool("d-1", wallet.address, "pool", sequence=n).sign(wallet)
        for n in (5, 9, 7)
    ]
    for signed in versions:
        remember(tmp_path, signed)
    kept = recall(tmp_path, versions[0].address)
    assert kept is not None and kept.record.sequence == 9
    check_not_older(tmp_path, versions[1])  # the newest: fine
    with pytest.raises(RecordError, match="sequence 7, older than the one you signed last"):
        check_not_older(tmp_path, versions[2])
    assert recall(tmp_path, "../etc/passwd") is None
    (tmp_path / f"{versions[0].address}.json").write_text("not json")
    assert recall(tmp_path, versions[0].address) is None


def test_a_record_the_sms_has_already_is_not_a_failure(tmp_path: Path) -> None:
    wallet = Wallet.generate()
    signed = OwnerRecord.workerpool("d-1", wallet.address, "pool", sequence=3).sign(wallet)
    with running_sms(tmp_path / "sms", f"sqlite:///{tmp_path / 'sms.db'}") as url:
        client = SmsClient(url, wallet=wallet)
        first = client.push_record(signed)
        assert (first["address"], first["sequence"]) == (signed.address, 3)
        assert "kept_newer" not in first
        assert client.push_record(signed)["kept_newer"] is True
        forged = OwnerRecord.workerpool("d-1", wallet.address, "pool", sequence=4)
        stranger = Wallet.generate()
        with pytest.raises(ConfideError, match="sms refused"):
            SmsClient(url, wallet=stranger).push_record(
                type(signed)(forged, stranger.sign_text(forged.signing_message()))
            )
