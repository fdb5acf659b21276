"""``confide volume push`` and ``confide volume pull`` against ``confide up``: a session's
input volume pushed (a new key for every version, uploaded before the session records
it) and pulled back byte for byte by the session's readers only; an older copy, a
tampered blob or a wallet outside the access policy gets nothing written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.acceptance.test_cli_up_platform import Up, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal

SESSION = """\
name: NAME
version: "1"
predecessor: null
access_policy: {read: [owner, READER], update: [owner]}
services:
  - name: copy
    measurements: ["sim:"""
SESSION += "ab" * 32
SESSION += """"]
    command: /app/copy
    volumes: [inputs]
volumes:
  - {name: inputs, mode: input}
"""


def make_session(up: Up, user: str, name: str, reader: str) -> None:  # noqa: F811
    path = up.root / user / f"{name}.yml"
    path.write_text(SESSION.replace("NAME", name).replace("READER", reader))
    up.ok(user, "session", "create", path)


def files(root: Path, contents: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in contents.items():
        (root / name).write_text(text)
    return root


def test_a_pushed_volume_is_pulled_back_by_its_readers(up: Up) -> None:  # noqa: F811
    owner = up.wallet("vic")
    reader = up.wallet("wes")
    make_session(up, "vic", "copy-1", reader)
    inputs = files(up.root / "vic" / "in", {"f1.txt": "Hello world", "f2.txt": "Hello together"})
    kept = up.root / "vic" / "encrypted"
    first = up.ok(
        "vic", "volume", "push", inputs, "--session", "copy-1", "--volume", "inputs", "--keep", kept
    )
    assert first["previous_tag"] is None and first["files"] == 2
    assert (kept / "volume.fspf").exists() and b"Hello" not in b"".join(
        p.read_bytes() for p in kept.rglob("*") if p.is_file()
    )
    # The owner and the reader the session names both get it back, byte for byte.
    for user, where in (("vic", "out-owner"), ("wes", "out-reader")):
        args: list[str | Path] = ["volume", "pull", up.root / user / where, "--session", "copy-1"]
        pulled = up.ok(user, *args, "--volume", "inputs", "--owner", owner)
        assert pulled["tag"] == first["tag"] and pulled["files"] == 2
        assert (up.root / user / where / "f1.txt").read_text() == "Hello world"
        assert (up.root / user / where / "f2.txt").read_text() == "Hello together"
    # A second push is a new version: a new tag, on top of the first.
    (inputs / "f1.txt").write_text("Hello again")
    second = up.ok("vic", "volume", "push", inputs, "--session", "copy-1", "--volume", "inputs")
    assert second["previous_tag"] == first["tag"] and second["tag"] != first["tag"]
    again = up.ok(
        "wes",
        "volume",
        "pull",
        up.root / "wes" / "v2",
        "--session",
        "copy-1",
        "--volume",
        "inputs",
        "--owner",
        owner,
    )
    assert again["tag"] == second["tag"]
    assert (up.root / "wes" / "v2" / "f1.txt").read_text() == "Hello again"
    # Every release is audited (the actor, not the key).
    database = f"sqlite:///{up.home / 'up' / 'sms.db'}"
    entries = json.dumps(up.ok("vic", "audit", "show", "--db", database))
    assert entries.count('"volume.key"') >= 3 and reader in entries


def test_a_pull_is_refused_to_others_and_writes_nothing(up: Up) -> None:  # noqa: F811
    owner = up.wallet("xia")
    reader = up.wallet("yan")
    up.wallet("zed")
    make_session(up, "xia", "copy-2", reader)
    inputs = files(up.root / "xia" / "in", {"secret.txt": "PLAINTEXT-MARKER"})
    # Before any push: nothing to pull, said so.
    before = up.cli(
        "yan",
        "volume",
        "pull",
        up.root / "yan" / "early",
        "--session",
        "copy-2",
        "--volume",
        "inputs",
        "--owner",
        owner,
    )
    assert_refusal(before, "no version yet", "confide volume push")
    assert not (up.root / "yan" / "early").exists()
    up.ok("xia", "volume", "push", inputs, "--session", "copy-2", "--volume", "inputs")
    # A wallet the access policy does not name: refused, nothing written.
    outsider = up.cli(
        "zed",
        "volume",
        "pull",
        up.root / "zed" / "out",
        "--session",
        "copy-2",
        "--volume",
        "inputs",
        "--owner",
        owner,
    )
    assert_refusal(outsider, "copy-2")
    assert not (up.root / "zed" / "out").exists()
    # A reader may not push (the access policy's update list is the owner's).
    pushed = up.cli(
        "yan",
        "volume",
        "push",
        inputs,
        "--session",
        "copy-2",
        "--volume",
        "inputs",
        "--owner",
        owner,
    )
    assert_refusal(pushed, "may not update")
    # An unknown volume is named.
    unknown = up.cli(
        "yan",
        "volume",
        "pull",
        up.root / "yan" / "x",
        "--session",
        "copy-2",
        "--volume",
        "nope",
        "--owner",
        owner,
    )
    assert_refusal(unknown, "no volume 'nope'")
    # A destination that is not empty: refused before anything is asked or fetched.
    busy = up.root / "yan" / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("mine")
    occupied = up.cli(
        "yan",
        "volume",
        "pull",
        busy,
        "--session",
        "copy-2",
        "--volume",
        "inputs",
        "--owner",
        owner,
    )
    assert_refusal(occupied, "not an empty directory", "nothing was fetched")
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]
    # No plaintext and no key in any output of any command.
    assert not any("PLAINTEXT-MARKER" in text for text in up.outputs)


def test_a_tampered_blob_is_refused_and_nothing_written(up: Up) -> None:  # noqa: F811
    owner = up.wallet("ada")
    make_session(up, "ada", "copy-3", owner)
    inputs = files(up.root / "ada" / "in", {"a.txt": "A" * 4096})
    pushed = up.ok("ada", "volume", "push", inputs, "--session", "copy-3", "--volume", "inputs")
    blob = up.home / "up" / "blobs" / pushed["blob"][:2] / pushed["blob"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    tampered = up.cli(
        "ada",
        "volume",
        "pull",
        up.root / "ada" / "out",
        "--session",
        "copy-3",
        "--volume",
        "inputs",
    )
    assert_refusal(tampered, pushed["blob"])
    assert not (up.root / "ada" / "out").exists()


def test_storage_holding_only_an_old_version_is_refused(up: Up) -> None:  # noqa: F811
    """The session names the current tag and blob: a storage that serves the previous
    version's bytes under the current name is caught by the digest, and one whose
    current blob is gone is an error, never the old version."""
    owner = up.wallet("bea")
    make_session(up, "bea", "copy-4", owner)
    inputs = files(up.root / "bea" / "in", {"v.txt": "version one"})
    first = up.ok("bea", "volume", "push", inputs, "--session", "copy-4", "--volume", "inputs")
    (inputs / "v.txt").write_text("version two")
    second = up.ok("bea", "volume", "push", inputs, "--session", "copy-4", "--volume", "inputs")
    blobs = up.home / "up" / "blobs"
    old = (blobs / first["blob"][:2] / first["blob"]).read_bytes()
    (blobs / second["blob"][:2] / second["blob"]).write_bytes(old)  # rolled back underneath
    rolled = up.cli(
        "bea",
        "volume",
        "pull",
        up.root / "bea" / "out",
        "--session",
        "copy-4",
        "--volume",
        "inputs",
    )
    assert rolled.returncode == 1 and "error: " in rolled.stderr
    assert not (up.root / "bea" / "out").exists()
    assert second["previous_tag"] == first["tag"]
    with sqlite3.connect(up.home / "up" / "sms.db") as db:
        rows = db.execute(
            "SELECT tag, blob_digest FROM volume_tags WHERE session = 'copy-4' ORDER BY seq"
        ).fetchall()
    assert rows == [(first["tag"], first["blob"]), (second["tag"], second["blob"])]
