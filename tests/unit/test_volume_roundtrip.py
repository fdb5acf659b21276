"""Round trips: what goes into a volume comes back exactly, and nothing leaks into it."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.crypto import SymmetricKey
from confide.errors import VolumeError, VolumeIntegrityError
from confide.volume import (
    VolumeResult,
    decrypt_tree,
    encrypt_tree,
    read_volume_info,
    verify_tree,
)
from tests.conftest import MIB, SECRET_MARKER, make_tree, tree_state


def test_round_trip_restores_contents_paths_modes_and_empty_dirs(
    tmp_path: Path, source: Path, key: SymmetricKey, volume: tuple[Path, VolumeResult]
) -> None:
    vol, result = volume
    assert result.files == 6
    assert result.bytes == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    out = tmp_path / "out"
    restored = decrypt_tree(vol, out, key, expected_tag=result.tag)
    assert restored == result
    assert tree_state(out) == tree_state(source)


def test_volume_holds_no_plaintext_and_no_names(
    source: Path, volume: tuple[Path, VolumeResult]
) -> None:
    vol, _ = volume
    blob = b"".join(p.read_bytes() for p in vol.rglob("*") if p.is_file())
    assert SECRET_MARKER not in blob
    for name in ("hello", "readme", "unicode", "three-segments", "empty-dir"):
        assert name.encode() not in blob
        assert not any(name in str(p) for p in vol.rglob("*"))


def test_same_files_twice_give_different_tags(
    source: Path, tmp_path: Path, key: SymmetricKey
) -> None:
    first = encrypt_tree(source, tmp_path / "a", key)
    second = encrypt_tree(source, tmp_path / "b", key)
    assert first.tag != second.tag
    assert verify_tree(tmp_path / "a", key).tag == first.tag


def test_verify_writes_nothing(volume: tuple[Path, VolumeResult], key: SymmetricKey) -> None:
    vol, result = volume
    before = sorted(p.name for p in vol.parent.iterdir())
    assert verify_tree(vol, key, expected_tag=result.tag.upper()).tag == result.tag
    assert sorted(p.name for p in vol.parent.iterdir()) == before


def test_info_reads_header_without_key(volume: tuple[Path, VolumeResult]) -> None:
    vol, result = volume
    info = read_volume_info(vol)
    assert info.format_version == 1
    assert info.objects == result.files
    assert info.stored_tag == result.tag
    assert info.segment_size == MIB


def test_empty_tree(tmp_path: Path, key: SymmetricKey) -> None:
    (tmp_path / "src").mkdir()
    result = encrypt_tree(tmp_path / "src", tmp_path / "vol", key)
    assert (result.files, result.bytes) == (0, 0)
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key, expected_tag=result.tag)
    assert list((tmp_path / "out").iterdir()) == []


def test_file_sizes_around_segment_boundaries(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sizes = [0, 1, MIB - 1, MIB, MIB + 1, 2 * MIB, 2 * MIB + 1]
    for size in sizes:
        (src / f"f{size}").write_bytes(os.urandom(size))
    result = encrypt_tree(src, tmp_path / "vol", key, workers=3)
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key, expected_tag=result.tag, workers=1)
    assert tree_state(tmp_path / "out") == tree_state(src)


def test_one_large_file_is_split_across_workers(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(20 * MIB + 3))  # 21 segments, 3 batches
    seen: list[int] = []
    result = encrypt_tree(src, tmp_path / "vol", key, workers=2, progress=seen.append)
    assert sum(seen) == 20 * MIB + 3
    assert len(seen) == 3
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key, expected_tag=result.tag)
    assert (tmp_path / "out/big").read_bytes() == (src / "big").read_bytes()


def test_special_permission_bits_are_not_restored(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "tool", 0o4755)
    result = encrypt_tree(src, tmp_path / "vol", key)
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key, expected_tag=result.tag)
    assert (tmp_path / "out/tool").stat().st_mode & 0o7777 == 0o755


def test_read_only_files_and_dirs_round_trip(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    (src / "ro").mkdir(parents=True)
    (src / "ro/file").write_bytes(b"x")
    os.chmod(src / "ro/file", 0o444)
    os.chmod(src / "ro", 0o555)
    result = encrypt_tree(src, tmp_path / "vol", key)
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key, expected_tag=result.tag)
    assert tree_state(tmp_path / "out") == tree_state(src)


def test_symlink_refused_at_encrypt(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(VolumeError, match="symbolic link"):
        encrypt_tree(src, tmp_path / "vol", key)
    assert not (tmp_path / "vol").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_fifo_refused_at_encrypt(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(VolumeError, match="not a regular file"):
        encrypt_tree(src, tmp_path / "vol", key)


def test_non_utf8_name_refused(tmp_path: Path, key: SymmetricKey) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (Path(os.fsdecode(bytes(src) + b"/bad\xff"))).write_bytes(b"x")
    with pytest.raises(VolumeError, match="UTF-8"):
        encrypt_tree(src, tmp_path / "vol", key)


_names = st.text(alphabet=string.ascii_letters + string.digits + "-_. é", min_size=1, max_size=12)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        st.lists(_names.filter(lambda n: n not in (".", "..")), min_size=1, max_size=3).map(tuple),
        st.binary(max_size=3000),
        max_size=6,
    )
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, files: dict[tuple[str, ...], bytes]
) -> None:
    base = tmp_path_factory.mktemp("prop")
    src = base / "src"
    src.mkdir()
    for parts, data in files.items():
        path = src.joinpath(*parts)
        if any(parent.is_file() for parent in path.parents) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    key = SymmetricKey.generate()
    result = encrypt_tree(src, base / "vol", key)
    decrypt_tree(base / "vol", base / "out", key, expected_tag=result.tag)
    assert tree_state(base / "out") == tree_state(src)


def test_make_tree_helper_is_self_consistent(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "t")
    state = tree_state(tmp_path / "t")
    assert all(state[path][2] == data for path, data in files.items())


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_many_small_files_in_processes_and_threads(
    tmp_path: Path, key: SymmetricKey, monkeypatch: pytest.MonkeyPatch, processes: bool
) -> None:
    from confide.volume import engine
    from confide.volume.api import read_manifest

    monkeypatch.setattr(engine, "_fork_is_safe", lambda: processes)
    src = tmp_path / "src"
    for index in range(700):  # three batches of up to 256 files
        path = src / f"d{index % 7}" / f"f{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(index % 50))
    result = encrypt_tree(src, tmp_path / "vol", key, workers=2)
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key, expected_tag=result.tag, workers=2)
    assert tree_state(tmp_path / "out") == tree_state(src)

    victim = next(f for f in read_manifest(tmp_path / "vol", key).files if f.path == "d3/f500")
    object_path = tmp_path / "vol" / "objects" / victim.object_id
    data = bytearray(object_path.read_bytes())
    data[0] ^= 1
    object_path.write_bytes(bytes(data))
    with pytest.raises(VolumeIntegrityError, match=r"'d3/f500' failed authentication"):
        decrypt_tree(tmp_path / "vol", tmp_path / "out2", key, workers=2)
    assert not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "vol"]
