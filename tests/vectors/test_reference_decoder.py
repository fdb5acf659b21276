"""The spec-only reference decoder against the version-1 known-answer vector."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest

from tests.vectors.reference_decoder import ReferenceError, decode_volume

VECTOR_DIR = pathlib.Path(__file__).parent / "volume-v1"
VOLUME = VECTOR_DIR / "volume"


def load_vector() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTOR_DIR / "vector.json").read_text("utf-8"))
    return doc


def pattern(size: int, seed: int) -> bytes:
    """The vector's content rule: byte i is (i * 31 + seed) % 251."""
    return bytes((i * 31 + seed) % 251 for i in range(size))


def test_vector_decodes_to_the_expected_tree() -> None:
    vector = load_vector()
    expected_tag = bytes.fromhex(vector["tag"])
    tag, tree = decode_volume(VOLUME, bytes.fromhex(vector["key"]), expected_tag)
    assert tag == expected_tag
    expected_paths = {d["path"] for d in vector["dirs"]} | {f["path"] for f in vector["files"]}
    assert set(tree) == expected_paths
    for d in vector["dirs"]:
        entry = tree[d["path"]]
        assert entry.kind == "dir"
        assert entry.mode == int(d["mode"], 8)
        assert entry.content == b""
    for f in vector["files"]:
        entry = tree[f["path"]]
        assert entry.kind == "file"
        assert entry.mode == int(f["mode"], 8)
        assert len(entry.content) == f["size"]
        assert entry.content == pattern(f["size"], f["seed"])


def test_vector_decodes_without_an_expected_tag() -> None:
    vector = load_vector()
    tag, _ = decode_volume(VOLUME, bytes.fromhex(vector["key"]))
    assert tag.hex() == vector["tag"]


def test_wrong_key_is_refused() -> None:
    key = bytearray.fromhex(load_vector()["key"])
    key[0] ^= 0x01
    with pytest.raises(ReferenceError):
        decode_volume(VOLUME, bytes(key))


def test_wrong_expected_tag_is_refused() -> None:
    vector = load_vector()
    with pytest.raises(ReferenceError, match="another version"):
        decode_volume(VOLUME, bytes.fromhex(vector["key"]), bytes(32))


def _flipped_copy(tmp_path: pathlib.Path, relative: str, offset: int) -> pathlib.Path:
    copy = tmp_path / "volume"
    shutil.copytree(VOLUME, copy)
    target = copy / relative
    data = bytearray(target.read_bytes())
    data[offset % len(data)] ^= 0x01
    target.write_bytes(bytes(data))
    return copy


def _objects() -> list[str]:
    return sorted(f"objects/{p.name}" for p in (VOLUME / "objects").iterdir())


@pytest.mark.parametrize(
    ("relative", "offset"),
    [
        ("volume.fspf", 0),  # magic
        ("volume.fspf", 20),  # volume-version id
        ("volume.fspf", 45),  # manifest ciphertext
        ("volume.fspf", -1),  # stored tag
        *[(name, 0) for name in _objects()],
        *[(name, -1) for name in _objects()],
    ],
)
def test_one_flipped_byte_is_refused(tmp_path: pathlib.Path, relative: str, offset: int) -> None:
    vector = load_vector()
    copy = _flipped_copy(tmp_path, relative, offset)
    with pytest.raises(ReferenceError):
        decode_volume(copy, bytes.fromhex(vector["key"]), bytes.fromhex(vector["tag"]))
    with pytest.raises(ReferenceError):
        decode_volume(copy, bytes.fromhex(vector["key"]))
