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


def test_sweep_removes_only_dead_processes_leftovers(
    tmp_path: Path, source: Path, key: SymmetricKey
) -> None:
    from confide.volume.tree import sweep_stale_staging

    live = tmp_path / f".vol.partial-{os.getpid()}-{'a' * 12}"
    dead = tmp_path / f".vol.partial-999999999-{'b' * 12}"
    dead_old = tmp_path / f".vol.old-999999998-{'c' * 12}"
    other = tmp_path / f".other.partial-999999999-{'d' * 12}"
    odd = [tmp_path / f".vol.partial-\u00b2-{'e' * 12}", tmp_path / f".vol.partial-{'9' * 20}-x"]
    for path in (live, dead, dead_old, other, *odd):
        (path / "d").mkdir(parents=True)
        (path / "d" / "f").write_text("plaintext")
    (dead / "d").chmod(0o500)
    assert sorted(sweep_stale_staging(tmp_path / "vol")) == sorted([dead, dead_old])
    assert live.exists() and other.exists() and all(p.exists() for p in odd)
    encrypt_tree(source, tmp_path / "vol", key)
    assert live.exists()


def test_sweep_never_follows_a_planted_link(tmp_path: Path) -> None:
    from confide.volume.tree import sweep_stale_staging

    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "file").write_text("keep")
    victim.chmod(0o755)
    (victim / "sub").chmod(0o755)
    work = tmp_path / "shared"
    work.mkdir()
    (work / f".out.partial-999999999-{'a' * 12}").symlink_to(victim)
    sweep_stale_staging(work / "out")
    assert (victim / "sub" / "file").read_text() == "keep"
    assert victim.stat().st_mode & 0o777 == 0o755
    assert (victim / "sub").stat().st_mode & 0o777 == 0o755


def test_remove_tree_deletes_links_without_following(tmp_path: Path) -> None:
    from confide.volume.tree import remove_tree

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("x")
    doomed = tmp_path / "doomed"
    (doomed / "ro").mkdir(parents=True)
    (doomed / "ro" / "link").symlink_to(keep)
    (doomed / "ro" / "file").write_text("y")
    (doomed / "ro").chmod(0o500)
    assert remove_tree(doomed)
    assert not doomed.exists()
    assert (keep / "f").read_text() == "x"


def test_decrypt_refuses_a_destination_that_holds_the_volume(
    tmp_path: Path, source: Path, key: SymmetricKey
) -> None:
    nest = tmp_path / "nest"
    nest.mkdir()
    encrypt_tree(source, nest / "vol", key)
    with pytest.raises(VolumeError, match="must not contain each other"):
        decrypt_tree(nest / "vol", nest, key, force=True)
    assert (nest / "vol" / "volume.fspf").exists()


def test_a_destination_filled_meanwhile_is_not_replaced_without_force(
    tmp_path: Path, source: Path, key: SymmetricKey, volume: tuple[Path, VolumeResult]
) -> None:
    vol, _ = volume
    out = tmp_path / "out"

    def someone_writes(_n: int) -> None:
        out.mkdir(exist_ok=True)
        (out / "precious.txt").write_text("mine")

    with pytest.raises(VolumeError, match="was filled while this ran; nothing was replaced"):
        decrypt_tree(vol, out, key, progress=someone_writes)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "vol"]


def test_force_replaces_atomically_and_leaves_nothing_behind(
    tmp_path: Path, source: Path, key: SymmetricKey, volume: tuple[Path, VolumeResult]
) -> None:
    vol, result = volume
    out = tmp_path / "out"
    (out / "ro").mkdir(parents=True)
    (out / "ro" / "old.txt").write_text("old")
    (out / "ro").chmod(0o500)
    decrypt_tree(vol, out, key, expected_tag=result.tag, force=True)
    assert tree_state(out) == tree_state(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "vol"]
