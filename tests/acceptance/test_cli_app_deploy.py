"""``confide app deploy|show|list|push-secret`` against ``confide up``: a redeploy is a new
version of the same app, the bundle blob is the deterministic tar of the bundle, and a
push without --app-measurement trusts only a record the caller's own wallet signed."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import httpx

from confide.attestation.measurement import Measurement
from confide.client.known import remember
from confide.client.storage import StorageClient
from confide.crypto.wallet import load_wallet
from confide.records import OwnerRecord, SignedRecord
from tests.acceptance.test_cli_up_platform import (  # noqa: F401 (fixture)
    PASSWORD,
    Up,
    make_bundle,
    up,
)
from tests.conftest import assert_refusal


def test_a_redeploy_is_a_new_version_of_the_same_app(up: Up) -> None:  # noqa: F811
    up.wallet("fay")
    bundle = make_bundle(up, "fay", "evolving")
    first = up.ok("fay", "app", "deploy", bundle)
    again = up.ok("fay", "app", "deploy", bundle)
    assert (again["address"], again["bundle"]) == (first["address"], first["bundle"])
    assert int(str(again["sequence"])) > int(str(first["sequence"]))
    (bundle / "app.py").write_text("print('v2')\n")
    changed = up.ok("fay", "app", "deploy", bundle)
    assert changed["address"] == first["address"]
    assert changed["measurement"] != first["measurement"]
    shown = up.ok("fay", "app", "show", str(first["address"]))
    assert shown["measurement"] == changed["measurement"]
    renamed = up.ok("fay", "app", "deploy", bundle, "--name", "other-name")
    assert renamed["address"] != first["address"]
    typed = "sgx:" + "5a" * 32
    sgx = up.ok("fay", "app", "deploy", bundle, "--name", "sgx-build", "--measurement", typed)
    assert sgx["measurement"] == typed


def test_the_bundle_blob_is_a_deterministic_tar_readable_by_its_uploader(up: Up) -> None:  # noqa: F811
    address = up.wallet("gus")
    bundle = make_bundle(up, "gus", "packed")
    deployed = up.ok("gus", "app", "deploy", bundle)
    wallet = load_wallet(up.root / "gus" / "wallet.json", PASSWORD)
    assert wallet.address == address
    storage = StorageClient(f"{up.url}/storage", wallet=wallet)
    target = up.root / "gus" / "blob.tar"
    storage.download(str(deployed["bundle"]), target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == deployed["bundle"]
    with tarfile.open(fileobj=io.BytesIO(target.read_bytes())) as tar:
        members = tar.getmembers()
    assert sorted(m.name for m in members) == ["app.py", "confide-app.yml"]
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
    # Knowing the digest is not enough to read it.
    anonymous = httpx.get(f"{up.url}/storage/v1/blobs/{deployed['bundle']}")
    assert anonymous.status_code == 401


def test_app_list_show_and_refusals(up: Up) -> None:  # noqa: F811
    owner = up.wallet("hal")
    up.ok("hal", "app", "deploy", make_bundle(up, "hal", "listed"))
    listed = up.ok("hal", "app", "list", "--owner", owner)["list"]
    assert isinstance(listed, list) and [a["name"] for a in listed] == ["listed"]
    text = up.cli("hal", "app", "show", "listed")
    assert text.returncode == 0 and "verified here" in text.stdout
    assert_refusal(up.cli("hal", "app", "show", "0x" + "00" * 20), "knows no app")
    assert_refusal(up.cli("hal", "app", "deploy", up.root / "hal"), "not an app bundle")
    assert_refusal(
        up.cli("hal", "app", "deploy", up.root / "hal" / "listed", "--name", "bad name"),
        "app name 'bad name'",
    )
    assert_refusal(
        up.cli("hal", "app", "deploy", up.root / "hal" / "listed", "--measurement", "md5:00"),
        "md5",
    )


def test_push_secret_without_measurement_trusts_only_the_callers_own_record(
    up: Up,  # noqa: F811
) -> None:
    owner = up.wallet("ivy")
    up.wallet("mallory")
    deployed = up.ok("ivy", "app", "deploy", make_bundle(up, "ivy", "guarded"))
    app = str(deployed["address"])
    # Another wallet cannot push the app's secret: the record is not signed by it.
    stolen = up.cli("mallory", "app", "push-secret", app, "--secret-value", "MALLORY-VALUE-1")
    assert_refusal(stolen, f"signed by {owner}", "not by your wallet")
    pushed = up.ok("ivy", "app", "push-secret", app, "--secret-value", "IVY-VALUE-1")
    assert pushed["version"] == 1
    # The record the hub serves verifies as ivy's, with the measurement released to.
    signed = SignedRecord.from_json(httpx.get(f"{up.url}/v1/records/{app}").json())
    assert str(signed.verify().measurement) == deployed["measurement"]
    # An --update after a redeploy follows the new measurement.
    bundle = up.root / "ivy" / "guarded"
    (bundle / "app.py").write_text("print('v2')\n")
    up.ok("ivy", "app", "deploy", bundle)
    done = up.cli("ivy", "app", "push-secret", app, "--update", "--secret-value", "IVY-VALUE-2")
    assert done.returncode == 0, done.stderr
    assert "the measurement your wallet signed" in done.stderr
    unknown = "0x" + "0b" * 20
    assert_refusal(
        up.cli("ivy", "app", "push-secret", unknown, "--secret-value", "IVY-VALUE-3"),
        f"knows no app {unknown}",
    )
    # A hub that withholds ivy's newest version (here: one it never got) serves an older
    # one: refused, since ivy's CLI keeps what her wallet signed last.
    kept = SignedRecord.from_json(httpx.get(f"{up.url}/v1/records/{app}").json()).record
    newer = OwnerRecord.app(
        kept.deployment,
        kept.owner,
        kept.name,
        bundle=str(kept.field("bundle")),
        measurement=Measurement.parse("sim:" + "ee" * 32),
        sequence=kept.sequence + 1,
    )
    wallet = load_wallet(up.root / "ivy" / "wallet.json", PASSWORD)
    remember(up.root / "ivy" / "records", newer.sign(wallet))
    replayed = up.cli("ivy", "app", "push-secret", app, "--update", "--secret-value", "IVY-4")
    assert_refusal(replayed, f"sequence {kept.sequence}", "older than the one you signed last")
    for output in up.outputs:
        for value in ("MALLORY-VALUE-1", "IVY-VALUE-1", "IVY-VALUE-2", "IVY-VALUE-3", "IVY-4"):
            assert value not in output
    assert json.loads(up.cli("ivy", "app", "check-secret", app, "--json").stdout)["exists"]
