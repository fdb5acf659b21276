"""``confide dataset encrypt|deploy|show|push-secret`` against ``confide up``: the volume is
one blob, its tag the record's checksum (checked with its key when at hand), and a key
with no app restriction needs --any-app."""

from __future__ import annotations

import hashlib
import io
import tarfile

from confide.client.storage import StorageClient
from confide.crypto.wallet import load_wallet
from tests.acceptance.test_cli_up_platform import PASSWORD, Up, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal

SIM = "sim:" + "3c" * 32


def test_a_dataset_is_its_volume_as_one_blob_and_its_tag(up: Up) -> None:  # noqa: F811
    owner = up.wallet("tia")
    data = up.root / "tia" / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("1,2\n")
    (data / "sub" / "b.bin").write_bytes(b"\x00" * 5000)
    volume = up.root / "tia" / "census"
    encrypted = up.ok("tia", "dataset", "encrypt", data, volume)
    assert encrypted["key_file"] == f"{volume}.key" and encrypted["files"] == 2
    deployed = up.ok("tia", "dataset", "deploy", volume)
    assert deployed["checksum"] == encrypted["tag"] and deployed["name"] == "census"
    shown = up.ok("tia", "dataset", "show", str(deployed["address"]))
    assert (shown["owner"], shown["checksum"], shown["blob"]) == (
        owner,
        encrypted["tag"],
        deployed["blob"],
    )
    # The blob is the volume's tree (ciphertext only), readable by its uploader.
    storage = StorageClient(
        f"{up.url}/storage", wallet=load_wallet(up.root / "tia" / "wallet.json", PASSWORD)
    )
    target = up.root / "tia" / "blob.tar"
    storage.download(str(deployed["blob"]), target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == deployed["blob"]
    with tarfile.open(fileobj=io.BytesIO(target.read_bytes())) as tar:
        names = tar.getnames()
    assert "volume.fspf" in names and not any(n.endswith("a.csv") for n in names)
    assert b"1,2" not in target.read_bytes()
    # Deploying again, under another name, with the key named explicitly.
    renamed = up.ok(
        "tia",
        "dataset",
        "deploy",
        volume,
        "--name",
        "census-2",
        "--key-file",
        str(encrypted["key_file"]),
    )
    assert renamed["address"] != deployed["address"]
    assert renamed["blob"] == deployed["blob"]


def test_dataset_refusals_name_what_is_wrong(up: Up) -> None:  # noqa: F811
    up.wallet("uma")
    data = up.root / "uma" / "data"
    data.mkdir(parents=True)
    (data / "f").write_text("f")
    volume = up.root / "uma" / "vol"
    up.ok("uma", "dataset", "encrypt", data, volume)
    # A volume whose key does not open it is not deployed.
    other = up.root / "uma" / "other.key"
    other.write_text("ab" * 32 + "\n")
    other.chmod(0o600)
    wrong = up.cli("uma", "dataset", "deploy", volume, "--key-file", other)
    assert wrong.returncode == 1 and "error: " in wrong.stderr
    assert_refusal(up.cli("uma", "dataset", "deploy", data), "volume")
    assert_refusal(up.cli("uma", "dataset", "show", "0x" + "00" * 20), "knows no dataset")
    dataset = str(up.ok("uma", "dataset", "deploy", volume)["address"])
    key = str(volume) + ".key"
    unrestricted = up.cli("uma", "dataset", "push-secret", dataset, "--secret-file", key)
    assert_refusal(unrestricted, "--app-measurement", "--any-app")
    both = up.cli(
        "uma",
        "dataset",
        "push-secret",
        dataset,
        "--secret-file",
        key,
        "--any-app",
        "--app-measurement",
        SIM,
    )
    assert_refusal(both, "contradict")
    restricted = up.ok(
        "uma", "dataset", "push-secret", dataset, "--secret-file", key, "--app-measurement", SIM
    )
    assert restricted == {"dataset": dataset, "version": 1}
    assert up.ok("uma", "dataset", "check-secret", dataset)["exists"] is True
    key_text = (up.root / "uma" / "vol.key").read_text().strip()
    for output in up.outputs:
        assert key_text not in output
