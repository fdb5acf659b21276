"""The format-1 known-answer vector: confide reads it, and writes it byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

from confide.crypto import SymmetricKey
from confide.volume import decrypt_tree, encrypt_tree
from tests.conftest import tree_state
from tests.vectors.volume_kat import VOLUME_DIR, build_plain_tree, counter_rng, load


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_committed_vector_decrypts_to_the_described_tree(tmp_path: Path) -> None:
    vector = load()
    key = SymmetricKey.from_hex(vector["key"])
    result = decrypt_tree(VOLUME_DIR, tmp_path / "out", key, expected_tag=vector["tag"])
    build_plain_tree(tmp_path / "expected", vector)
    assert tree_state(tmp_path / "out") == tree_state(tmp_path / "expected")
    assert result.files == len(vector["files"])


def test_encryption_with_the_vector_randomness_is_byte_identical(tmp_path: Path) -> None:
    vector = load()
    build_plain_tree(tmp_path / "plain", vector)
    result = encrypt_tree(
        tmp_path / "plain",
        tmp_path / "vol",
        SymmetricKey.from_hex(vector["key"]),
        rng=counter_rng(vector["rng_label"].encode()),
    )
    assert result.tag == vector["tag"]
    assert _files(tmp_path / "vol") == _files(VOLUME_DIR)
    assert sorted(os.listdir(tmp_path / "vol")) == ["objects", "volume.fspf"]
