"""Every way of changing a volume is caught, with the same VolumeIntegrityError, before release."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from confide.crypto import SymmetricKey, seal_manifest
from confide.errors import VolumeIntegrityError
from confide.volume import decrypt_tree, encrypt_tree, read_manifest, verify_tree
from confide.volume.format import (
    FORMAT_VERSION,
    SEALED_SEGMENT_SIZE,
    SEGMENT_SIZE,
    SUITE_AES256GCM_HKDF_SHA256,
    Header,
    VolumeKeys,
    compute_tag,
)
from tests.conftest import MIB, flip_bit

Tamper = Callable[[Path, dict[str, Path]], object]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "three.bin").write_bytes(os.urandom(2 * MIB + 100))  # segments: full, full, short
    (src / "twin-a").write_bytes(os.urandom(4000))
    (src / "twin-b").write_bytes(os.urandom(4000))
    (src / "small.txt").write_bytes(b"small secret\n")
    return src


def objects_by_path(vol: Path, key: SymmetricKey) -> dict[str, Path]:
    return {f.path: vol / "objects" / f.object_id for f in read_manifest(vol, key).files}


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _rewrite_segments(path: Path, order: list[int]) -> None:
    data = path.read_bytes()
    segments = [data[i : i + SEALED_SEGMENT_SIZE] for i in range(0, len(data), SEALED_SEGMENT_SIZE)]
    path.write_bytes(b"".join(segments[i] for i in order))


def _symlink_over(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def _header(vol: Path) -> Path:
    return vol / "volume.fspf"


TAMPERS: dict[str, Tamper] = {
    "bit in first segment": lambda v, o: flip_bit(o["three.bin"], 5),
    "bit in middle segment": lambda v, o: flip_bit(o["three.bin"], SEALED_SEGMENT_SIZE + 77),
    "bit in last segment": lambda v, o: flip_bit(o["three.bin"], 2 * SEALED_SEGMENT_SIZE + 3),
    "bit in a segment tag": lambda v, o: flip_bit(o["small.txt"], 13 + 15, 7),
    "bit in manifest": lambda v, o: flip_bit(_header(v), 40 + 10),
    "bit in magic": lambda v, o: flip_bit(_header(v), 0),
    "bit in format version": lambda v, o: flip_bit(_header(v), 9),
    "bit in suite": lambda v, o: flip_bit(_header(v), 11),
    "bit in segment size": lambda v, o: flip_bit(_header(v), 13),
    "bit in volume-version id": lambda v, o: flip_bit(_header(v), 20),
    "bit in manifest length": lambda v, o: flip_bit(_header(v), 39),
    "bit in stored tag": lambda v, o: flip_bit(_header(v), -1 + _header(v).stat().st_size),
    "volume file truncated": lambda v, o: _header(v).write_bytes(_header(v).read_bytes()[:-1]),
    "volume file emptied": lambda v, o: _header(v).write_bytes(b""),
    "object truncated by a byte": lambda v, o: o["small.txt"].write_bytes(
        o["small.txt"].read_bytes()[:-1]
    ),
    "object truncated at a segment boundary": lambda v, o: o["three.bin"].write_bytes(
        o["three.bin"].read_bytes()[: 2 * SEALED_SEGMENT_SIZE]
    ),
    "bytes appended to an object": lambda v, o: o["small.txt"].write_bytes(
        o["small.txt"].read_bytes() + b"\x00"
    ),
    "segment removed": lambda v, o: _rewrite_segments(o["three.bin"], [0, 2]),
    "segment duplicated": lambda v, o: _rewrite_segments(o["three.bin"], [0, 0, 2]),
    "segments reordered": lambda v, o: _rewrite_segments(o["three.bin"], [1, 0, 2]),
    "segment appended": lambda v, o: _rewrite_segments(o["three.bin"], [0, 1, 2, 2]),
    "two objects swapped": lambda v, o: _swap(o["twin-a"], o["twin-b"]),
    "object added": lambda v, o: shutil.copy(o["small.txt"], v / "objects" / ("ab" * 16)),
    "object deleted": lambda v, o: o["twin-b"].unlink(),
    "objects directory removed": lambda v, o: shutil.rmtree(v / "objects"),
    "object replaced by a symlink": lambda v, o: _symlink_over(o["small.txt"], o["twin-a"]),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampering_is_refused_and_nothing_is_released(
    tmp_path: Path, tree: Path, key: SymmetricKey, name: str
) -> None:
    vol = tmp_path / "vol"
    result = encrypt_tree(tree, vol, key)
    TAMPERS[name](vol, objects_by_path(vol, key))
    with pytest.raises(VolumeIntegrityError, match=f"volume {vol}"):
        verify_tree(vol, key)
    with pytest.raises(VolumeIntegrityError):
        verify_tree(vol, key, expected_tag=result.tag)
    with pytest.raises(VolumeIntegrityError):
        decrypt_tree(vol, tmp_path / "out", key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "vol"]


def test_segment_failure_names_the_file(tmp_path: Path, tree: Path, key: SymmetricKey) -> None:
    vol = tmp_path / "vol"
    encrypt_tree(tree, vol, key)
    flip_bit(objects_by_path(vol, key)["three.bin"], SEGMENT_SIZE)
    with pytest.raises(VolumeIntegrityError, match=r"'three\.bin' failed authentication"):
        verify_tree(vol, key)


def test_wrong_key_is_refused(tmp_path: Path, tree: Path, key: SymmetricKey) -> None:
    vol = tmp_path / "vol"
    result = encrypt_tree(tree, vol, key)
    other = SymmetricKey.generate()
    with pytest.raises(VolumeIntegrityError, match="wrong key, or the volume was tampered with"):
        decrypt_tree(vol, tmp_path / "out", other)
    with pytest.raises(VolumeIntegrityError, match="wrong key"):
        verify_tree(vol, other, expected_tag=result.tag)
    assert not (tmp_path / "out").exists()


def test_rollback_to_an_older_version_is_caught_with_the_tag(
    tmp_path: Path, tree: Path, key: SymmetricKey
) -> None:
    vol = tmp_path / "vol"
    old = encrypt_tree(tree, vol, key)
    shutil.copytree(vol, tmp_path / "old-copy")
    (tree / "small.txt").write_bytes(b"updated\n")
    new = encrypt_tree(tree, vol, key, force=True)
    assert verify_tree(vol, key, expected_tag=new.tag).tag == new.tag
    shutil.rmtree(vol)
    shutil.copytree(tmp_path / "old-copy", vol)  # the attacker restores the old version
    assert verify_tree(vol, key).tag == old.tag  # consistent on its own...
    with pytest.raises(VolumeIntegrityError, match="another version of the volume"):
        verify_tree(vol, key, expected_tag=new.tag)  # ...but not the version expected
    with pytest.raises(VolumeIntegrityError, match="rolled back"):
        decrypt_tree(vol, tmp_path / "out", key, expected_tag=new.tag)
    assert not (tmp_path / "out").exists()


def test_children_may_be_listed_before_their_parents(tmp_path: Path, key: SymmetricKey) -> None:
    forge(
        tmp_path / "vol",
        key,
        b'{"entries":[{"mode":448,"path":"a/b","type":"dir"},'
        b'{"mode":493,"path":"a","type":"dir"}],"format":1}',
    )
    decrypt_tree(tmp_path / "vol", tmp_path / "out", key)
    assert (tmp_path / "out/a/b").is_dir()
    assert (tmp_path / "out/a/b").stat().st_mode & 0o777 == 0o700


def test_old_manifest_with_new_objects_is_refused(
    tmp_path: Path, tree: Path, key: SymmetricKey
) -> None:
    vol = tmp_path / "vol"
    encrypt_tree(tree, vol, key)
    old_header = (vol / "volume.fspf").read_bytes()
    encrypt_tree(tree, vol, key, force=True)
    (vol / "volume.fspf").write_bytes(old_header)
    with pytest.raises(VolumeIntegrityError, match="unexpected object"):
        verify_tree(vol, key)


def forge(vol: Path, key: SymmetricKey, manifest: bytes) -> None:
    """Write a volume whose manifest says anything: what a malicious key holder can do."""
    vvid = os.urandom(16)
    keys = VolumeKeys(key, vvid)
    header = Header(
        FORMAT_VERSION, SUITE_AES256GCM_HKDF_SHA256, SEGMENT_SIZE, vvid, len(manifest) + 16
    ).pack()
    ciphertext = seal_manifest(keys.manifest_key, manifest, header)
    (vol / "objects").mkdir(parents=True)
    (vol / "volume.fspf").write_bytes(header + ciphertext + compute_tag(keys, header, ciphertext))


def _file(path: str) -> str:
    return (
        f'{{"digest":"{"0" * 64}","mode":420,"object":"{"1" * 32}",'
        f'"path":"{path}","size":0,"type":"file"}}'
    )


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        (_file("../escaped"), "escape"),
        (_file("/etc/escaped"), "escape"),
        (_file("a/../../escaped"), "escape"),
        (_file("./x"), "escape"),
        (_file("a//b"), "escape"),
        (_file("nodir/x"), "not a listed directory"),
        (_file("\\ud800"), "escape"),
        (_file("f") + "," + _file("f/x").replace("1" * 32, "2" * 32), "not a listed directory"),
        ('{"mode":493,"path":"d","type":"dir"},' + '{"mode":493,"path":"d","type":"dir"}', "twice"),
        ('{"mode":4095,"path":"d","type":"dir"}', "mode"),
        ('{"mode":493,"path":"d","type":"dir","extra":1}', "unexpected fields"),
        ('{"mode":493,"path":"d","type":"symlink"}', "unexpected fields or type"),
    ],
)
def test_malicious_manifest_is_refused_before_any_write(
    tmp_path: Path, key: SymmetricKey, entries: str, reason: str
) -> None:
    vol = tmp_path / "vol"
    forge(vol, key, ('{"entries":[' + entries + '],"format":1}').encode())
    (tmp_path / "work").mkdir()
    with pytest.raises(VolumeIntegrityError, match=reason):
        decrypt_tree(vol, tmp_path / "work" / "out", key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol", "work"]
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"format":2,"entries":[]}',
        b'{"format":true,"entries":[]}',
        b'{"format":1,"entries":[],"extra":0}',
        b'{"format":1,"format":1,"entries":[]}',
        b'{"format":1,"entries":[{"mode":493,"path":"d","type":"dir","path":"e"}]}',
        b'{"format":1,"entries":[{"mode":true,"path":"d","type":"dir"}]}',
        b'{"format":1,"entries":[{"mode":493.0,"path":"d","type":"dir"}]}',
        b'{"format":1.0,"entries":[]}',
        b"[" * 100000,
    ],
)
def test_garbled_manifest_is_refused(tmp_path: Path, key: SymmetricKey, document: bytes) -> None:
    forge(tmp_path / "vol", key, document)
    with pytest.raises(VolumeIntegrityError, match="manifest is invalid"):
        verify_tree(tmp_path / "vol", key)
