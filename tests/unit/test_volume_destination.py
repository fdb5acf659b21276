"""Destinations: nothing is overwritten without --force, and nothing half-written stays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from confide.crypto import SymmetricKey
from confide.errors import VolumeError
from confide.volume import VolumeResult, decrypt_tree, encrypt_tree, verify_tree
from tests.conftest import tree_state


def test_encrypt_refuses_non_empty_destination(
    tmp_path: Path, source: Path, key: SymmetricKey
) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "precious").write_text("keep me")
    with pytest.raises(VolumeError, match="not empty; nothing was written"):
        encrypt_tree(source, dst, key)
    assert [p.name for p in dst.iterdir()] == ["precious"]


def test_encrypt_into_empty_destination_and_force(
    tmp_path: Path, source: Path, key: SymmetricKey
) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    first = encrypt_tree(source, dst, key)
    second = encrypt_tree(source, dst, key, force=True)
    assert verify_tree(dst, key).tag == second.tag != first.tag
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_decrypt_refuses_non_empty_destination_then_force_replaces(
    tmp_path: Path, source: Path, key: SymmetricKey, volume: tuple[Path, VolumeResult]
) -> None:
    vol, result = volume
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("keep me")
    with pytest.raises(VolumeError, match="not empty"):
        decrypt_tree(vol, out, key)
    assert [p.name for p in out.iterdir()] == ["precious"]
    decrypt_tree(vol, out, key, expected_tag=result.tag, force=True)
    assert tree_state(out) == tree_state(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "vol"]


def test_destination_that_is_a_file(tmp_path: Path, source: Path, key: SymmetricKey) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(VolumeError, match="not a directory"):
        encrypt_tree(source, tmp_path / "file", key, force=True)
    assert (tmp_path / "file").read_text() == "x"


def test_missing_source(tmp_path: Path, key: SymmetricKey) -> None:
    with pytest.raises(VolumeError, match="does not exist"):
        encrypt_tree(tmp_path / "nope", tmp_path / "vol", key)
    with pytest.raises(VolumeError, match="does not exist"):
        decrypt_tree(tmp_path / "nope", tmp_path / "out", key)
    with pytest.raises(VolumeError, match="not a confide volume"):
        verify_tree(tmp_path, key)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_destination_parent(tmp_path: Path, source: Path, key: SymmetricKey) -> None:
    with pytest.raises(VolumeError, match="parent directory"):
        encrypt_tree(source, tmp_path / "a" / "b", key)


def test_source_and_destination_must_not_nest(source: Path, key: SymmetricKey) -> None:
    with pytest.raises(VolumeError, match="must not contain each other"):
        encrypt_tree(source, source / "vol", key)
    assert not (source / "vol").exists()


def test_malformed_expected_tag(volume: tuple[Path, VolumeResult], key: SymmetricKey) -> None:
    with pytest.raises(VolumeError, match="64 hex"):
        verify_tree(volume[0], key, expected_tag="zz")


def test_staging_of_a_live_process_is_not_swept(
    tmp_path: Path, source: Path, key: SymmetricKey
) -> None:
    from confide.volume.tree import sweep_stale_staging

    live = tmp_path / f".vol.partial-{os.getpid()}-abc"
    dead = tmp_path / ".vol.partial-999999999-abc"
    other = tmp_path / ".other.partial-999999999-abc"
    for path in (live, dead, other):
        (path / "d").mkdir(parents=True)
        (path / "d" / "f").write_text("plaintext")
    (dead / "d").chmod(0o500)
    assert sweep_stale_staging(tmp_path / "vol") == [dead]
    assert live.exists() and other.exists() and not dead.exists()
    encrypt_tree(source, tmp_path / "vol", key)
    assert live.exists()
