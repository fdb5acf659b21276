"""The stored zip (encrypted or not), sealed logs, and safe opening: real HPKE and segment
crypto, tampering of every kind, and hostile archives refused before anything lands."""

from __future__ import annotations

import contextlib
import os
import random
import stat
import zipfile
from pathlib import Path

import pytest

from confide.crypto.result_key import ResultKeyPair
from confide.results.archive import extract_zip
from confide.results.digest import SALT_NAME, ResultError, result_digest
from confide.results.opening import open_result
from confide.results.sealed import build_result, is_encrypted, open_logs, seal_logs

TASK = "0x" + "ab" * 32
OTHER_TASK = "0x" + "cd" * 32
FILES = {"result.txt": b"f(3) = 56\n", "sub/dir/big.bin": os.urandom((1 << 20) + 777)}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    os.chmod(root / "result.txt", 0o755)
    return root


@pytest.fixture
def pair(tmp_path: Path) -> tuple[bytes, Path]:
    keys = ResultKeyPair.generate()
    path = tmp_path / "result-key"
    keys.write(path, overwrite=False)
    return keys.public_bytes, path


def test_encrypted_result_round_trip(tmp_path: Path, out: Path, pair: tuple[bytes, Path]) -> None:
    public, key = pair
    salt = os.urandom(32)
    stored = tmp_path / "stored.zip"
    digest = build_result(out, stored, task_id=TASK, salt=salt, result_public_key=public)
    assert is_encrypted(stored)
    with zipfile.ZipFile(stored) as archive:
        assert sorted(archive.namelist()) == ["result.enc", "sealed-key"]
    raw = stored.read_bytes()
    assert b"f(3) = 56" not in raw and FILES["sub/dir/big.bin"][:64] not in raw
    dest = tmp_path / "dest"
    written = open_result(
        stored,
        dest,
        task_id=TASK,
        result_private_key_path=key,
        expected_digest=result_digest(out, salt),
    )
    assert sorted(p.relative_to(dest).as_posix() for p in written) == sorted([*FILES, SALT_NAME])
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert (dest / SALT_NAME).read_text().strip() == salt.hex()
    assert stat.S_IMODE((dest / "result.txt").stat().st_mode) == 0o755
    assert [p.name for p in dest.iterdir() if p.name.startswith(".confide-open")] == []
    # a fresh data key each time: the same files give another ciphertext
    again = tmp_path / "again.zip"
    assert build_result(out, again, task_id=TASK, salt=salt, result_public_key=public) != digest


def test_plain_result_is_deterministic(tmp_path: Path, out: Path) -> None:
    salt = os.urandom(32)
    one, two = tmp_path / "one.zip", tmp_path / "two.zip"
    first = build_result(out, one, task_id=TASK, salt=salt, result_public_key=None)
    os.utime(out / "result.txt", (5, 5))
    assert build_result(out, two, task_id=TASK, salt=salt, result_public_key=None) == first
    assert one.read_bytes() == two.read_bytes()
    assert not is_encrypted(one)
    written = open_result(one, tmp_path / "d", task_id=TASK, result_private_key_path=None)
    assert len(written) == 3
    assert (out / ".confide").exists() is False


@pytest.mark.parametrize("where", ["sealed-key", "result.enc", "header"])
def test_tampered_ciphertext_is_refused(
    tmp_path: Path, out: Path, pair: tuple[bytes, Path], where: str
) -> None:
    public, key = pair
    stored = tmp_path / "stored.zip"
    build_result(out, stored, task_id=TASK, salt=os.urandom(32), result_public_key=public)
    with zipfile.ZipFile(stored) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = "result.enc" if where == "header" else where
    data = bytearray(entries[name])
    data[5 if where == "header" else len(data) // 2] ^= 0x01
    entries[name] = bytes(data)
    with zipfile.ZipFile(stored, "w") as archive:
        for entry, content in entries.items():
            archive.writestr(entry, content)
    dest = tmp_path / "dest"
    with pytest.raises(ResultError):
        open_result(stored, dest, task_id=TASK, result_private_key_path=key)
    assert list(dest.iterdir()) == []


def test_truncated_and_extended_ciphertext(
    tmp_path: Path, out: Path, pair: tuple[bytes, Path]
) -> None:
    public, key = pair
    stored = tmp_path / "stored.zip"
    build_result(out, stored, task_id=TASK, salt=os.urandom(32), result_public_key=public)
    with zipfile.ZipFile(stored) as archive:
        sealed, body = archive.read("sealed-key"), archive.read("result.enc")
    segment = (1 << 20) + 16
    for changed in (body[: len(body) - 1], body[: 26 + segment], body + body[26:]):
        with zipfile.ZipFile(stored, "w") as archive:
            archive.writestr("sealed-key", sealed)
            archive.writestr("result.enc", changed)
        with pytest.raises(ResultError, match="does not authenticate"):
            open_result(stored, tmp_path / "d", task_id=TASK, result_private_key_path=key)


def test_wrong_key_and_wrong_task(tmp_path: Path, out: Path, pair: tuple[bytes, Path]) -> None:
    public, key = pair
    stored = tmp_path / "stored.zip"
    build_result(out, stored, task_id=TASK, salt=os.urandom(32), result_public_key=public)
    other = ResultKeyPair.generate()
    other_path = tmp_path / "other-key"
    other.write(other_path, overwrite=False)
    with pytest.raises(ResultError, match="does not open with this result key"):
        open_result(stored, tmp_path / "d", task_id=TASK, result_private_key_path=other_path)
    with pytest.raises(ResultError, match="does not open with this result key"):
        open_result(stored, tmp_path / "d", task_id=OTHER_TASK, result_private_key_path=key)
    with pytest.raises(ResultError, match="encrypted to your result key: none was given"):
        open_result(stored, tmp_path / "d", task_id=TASK, result_private_key_path=None)
    with pytest.raises(ResultError, match="no result key at"):
        open_result(
            stored, tmp_path / "d", task_id=TASK, result_private_key_path=tmp_path / "missing"
        )
    with pytest.raises(ResultError, match="salted digest"):
        open_result(
            stored,
            tmp_path / "d",
            task_id=TASK,
            result_private_key_path=key,
            expected_digest="00" * 32,
        )


def test_logs_are_sealed_to_the_task(tmp_path: Path, pair: tuple[bytes, Path]) -> None:
    public, key = pair
    sealed = seal_logs(b"line one\nline two\n", public, TASK)
    assert b"line one" not in sealed
    assert open_logs(sealed, key, TASK) == b"line one\nline two\n"
    with pytest.raises(ResultError, match="logs does not open"):
        open_logs(sealed, key, OTHER_TASK)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(ResultError):
        open_logs(bytes(flipped), key, TASK)


def test_the_output_may_not_hold_confide_names_or_links(tmp_path: Path, out: Path) -> None:
    (out / ".confide").mkdir()
    with pytest.raises(ResultError, match="keeps for itself"):
        build_result(
            out, tmp_path / "s.zip", task_id=TASK, salt=os.urandom(32), result_public_key=None
        )
    (out / ".confide").rmdir()
    (out / "escape").symlink_to("/etc/passwd")
    with pytest.raises(ResultError, match="escape in the result is not a regular file"):
        build_result(
            out, tmp_path / "s.zip", task_id=TASK, salt=os.urandom(32), result_public_key=None
        )
    (out / "escape").unlink()
    deep = out.joinpath(*["d" * 250] * 5)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"")
    with pytest.raises(ResultError, match="longer than 1024 bytes"):
        build_result(
            out, tmp_path / "s.zip", task_id=TASK, salt=os.urandom(32), result_public_key=None
        )
    with pytest.raises(ResultError, match="not a task id"):
        build_result(
            out, tmp_path / "s.zip", task_id="../x", salt=os.urandom(32), result_public_key=None
        )


def hostile(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("../escape.txt", b"x")], "'..'"),
        ([("a/../../escape.txt", b"x")], "'..'"),
        ([("/etc/passwd", b"x")], "not a relative path"),
        ([("C:/windows.txt", b"x")], "drive"),
        ([("a\\b.txt", b"x")], "not a relative path"),
        ([(symlink_entry("link"), b"/etc/passwd")], "is a symlink"),
        ([("same", b"1"), ("same", b"2")], "there twice"),
        ([("file", b"1"), ("file/under", b"2")], "lies under a file"),
    ],
)
def test_hostile_archives_are_refused(
    tmp_path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], message: str
) -> None:
    archive = hostile(tmp_path / "evil.zip", entries)
    dest = tmp_path / "dest"
    with pytest.raises(ResultError, match=message):
        open_result(archive, dest, task_id=TASK, result_private_key_path=None)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_too_many_entries(tmp_path: Path) -> None:
    archive = hostile(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(30)])
    with pytest.raises(ResultError, match="30 entries: at most 20"):
        extract_zip(archive, tmp_path, max_files=20)


def test_decompression_bomb_is_stopped_by_the_bytes_written(tmp_path: Path) -> None:
    bomb = hostile(tmp_path / "bomb.zip", [("zeros", bytes(20 << 20))])
    assert bomb.stat().st_size < 100_000
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ResultError, match="expands past 1048576 bytes"):
        extract_zip(bomb, dest, max_bytes=1 << 20)
    # a header that understates the size: the real bytes are counted (and CRC-checked)
    data = bytearray(bomb.read_bytes())
    with zipfile.ZipFile(bomb) as archive:
        info = archive.getinfo("zeros")
    for offset in (info.header_offset + 22,):  # local header: uncompressed size
        data[offset : offset + 4] = (1000).to_bytes(4, "little")
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    lying = tmp_path / "lying.zip"
    lying.write_bytes(bytes(data))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ResultError):
        extract_zip(lying, other, max_bytes=1 << 20)
    assert sum(p.stat().st_size for p in other.rglob("*") if p.is_file()) <= 1 << 20


def test_an_entry_never_replaces_what_the_caller_keeps(tmp_path: Path) -> None:
    salt = os.urandom(32).hex()
    archive = hostile(tmp_path / "a.zip", [(f"{TASK}.zip", b"evil"), (SALT_NAME, salt.encode())])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f"{TASK}.zip").write_bytes(b"kept")
    with pytest.raises(ResultError, match="would replace"):
        open_result(archive, dest, task_id=TASK, result_private_key_path=None, keep=[f"{TASK}.zip"])
    assert (dest / f"{TASK}.zip").read_bytes() == b"kept"
    # a symlink planted in the destination is not followed
    (dest / "sub").symlink_to(tmp_path)
    archive = hostile(tmp_path / "b.zip", [("sub/x", b"evil"), (SALT_NAME, salt.encode())])
    with pytest.raises(ResultError, match="not a directory"):
        open_result(archive, dest, task_id=TASK, result_private_key_path=None)
    assert not (tmp_path / "x").exists()


def test_a_plain_zip_without_salt_is_not_a_result(tmp_path: Path) -> None:
    archive = hostile(tmp_path / "a.zip", [("x", b"1")])
    with pytest.raises(ResultError, match=r"no \.confide/salt"):
        open_result(archive, tmp_path / "d", task_id=TASK, result_private_key_path=None)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ResultError, match="not a readable zip"):
        open_result(
            tmp_path / "junk.zip", tmp_path / "d", task_id=TASK, result_private_key_path=None
        )


@pytest.mark.parametrize("encrypted", [False, True])
def test_mutated_archives_fail_only_with_result_error(
    tmp_path: Path, out: Path, pair: tuple[bytes, Path], encrypted: bool
) -> None:
    public, key = pair
    (out / "sub/dir/big.bin").unlink()  # small archives: many mutations, quickly
    stored = tmp_path / "stored.zip"
    build_result(
        out,
        stored,
        task_id=TASK,
        salt=os.urandom(32),
        result_public_key=public if encrypted else None,
    )
    original = stored.read_bytes()
    chance = random.Random(19)  # noqa: S311 - reproducible mutations, not keys
    for attempt in range(150):
        data = bytearray(original)
        for _ in range(chance.randint(1, 4)):
            data[chance.randrange(len(data))] = chance.randrange(256)
        if attempt % 10 == 0:
            data = data[: chance.randrange(len(data))]
        mutated = tmp_path / f"m{attempt}.zip"
        mutated.write_bytes(bytes(data))
        with contextlib.suppress(ResultError):
            open_result(
                mutated, tmp_path / f"d{attempt}", task_id=TASK, result_private_key_path=key
            )


def test_an_existing_file_is_never_replaced_by_a_result(tmp_path: Path, out: Path) -> None:
    salt = os.urandom(32)
    stored = tmp_path / "stored.zip"
    build_result(out, stored, task_id=TASK, salt=salt, result_public_key=None)
    dest = tmp_path / "home"
    dest.mkdir()
    (dest / "result.txt").write_bytes(b"the user's own file\n")
    with pytest.raises(ResultError, match="exists and differs"):
        open_result(stored, dest, task_id=TASK, result_private_key_path=None)
    assert (dest / "result.txt").read_bytes() == b"the user's own file\n"
    assert not (dest / "sub").exists() or not any((dest / "sub").rglob("*.bin"))
    # the same result again into the same place: identical files are left as they are
    again = tmp_path / "again"
    first = open_result(stored, again, task_id=TASK, result_private_key_path=None)
    second = open_result(stored, again, task_id=TASK, result_private_key_path=None)
    assert first == second
