"""The storage's pieces without a server: ranges, sizes, the checked stream, signing by
digest, and the local directory backend."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from confide.cli.serve_storage import parse_size, serve_storage
from confide.crypto.wallet import Wallet
from confide.errors import StorageError
from confide.storage.backend import (
    BlobNotFoundError,
    ByteRange,
    CheckedStream,
    DigestMismatchError,
    SizeMismatchError,
    check_digest,
    rechunk,
)
from confide.storage.http import parse_range
from confide.storage.local import LocalBackend
from confide.web.problems import HttpProblemError

WALLET = Wallet.generate()
NOW = 1_800_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=99-99", (99, 99)),
    ],
)
def test_satisfiable_ranges(text: str, expected: tuple[int, int]) -> None:
    found = parse_range(text, 100)
    assert (found.start, found.end) == expected
    assert found.length == expected[1] - expected[0] + 1


@pytest.mark.parametrize(
    "text",
    ["bytes=100-", "bytes=5-4", "bytes=-0", "bytes=-", "bytes=a-b", "lines=0-1", "bytes=0-1,3-4"],
)
def test_unsatisfiable_or_malformed_ranges_are_416(text: str) -> None:
    with pytest.raises(HttpProblemError) as refused:
        parse_range(text, 100)
    assert refused.value.status == 416
    assert refused.value.extra == {"size": 100}


def test_no_range_of_an_empty_blob() -> None:
    with pytest.raises(HttpProblemError):
        parse_range("bytes=-1", 0)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GiB", 10 << 30),
        ("512MiB", 512 << 20),
        ("1KiB", 1024),
        ("1TiB", 1 << 40),
        ("500MB", 500_000_000),
        ("2G", 2_000_000_000),
        ("1048576", 1 << 20),
        ("7B", 7),
        ("64gib", 64 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "1.5GiB", "-1", "10 PiB", "GiB"])
def test_sizes_that_are_not(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_size(text)


def test_digests_are_64_lower_case_hex() -> None:
    assert check_digest("a" * 64) == "a" * 64
    for bad in ("A" * 64, "a" * 63, "g" * 64, "../" + "a" * 61):
        with pytest.raises(StorageError):
            check_digest(bad)


def test_the_checked_stream_stops_at_once_past_the_announced_size() -> None:
    taken = []

    def chunks() -> Iterator[bytes]:
        for piece in (b"a" * 10, b"b" * 10, b"c" * 10):
            taken.append(piece)
            yield piece

    checked = CheckedStream(sha(b"x"), 15, chunks())
    with pytest.raises(SizeMismatchError):
        list(checked)
    assert len(taken) == 2  # the third piece was never asked for


def test_the_checked_stream_checks_length_and_digest() -> None:
    short = CheckedStream(sha(b"abc"), 4, [b"abc"])
    list(short)
    with pytest.raises(SizeMismatchError):
        short.verify()
    wrong = CheckedStream(sha(b"abd"), 3, [b"ab", b"c"])
    list(wrong)
    with pytest.raises(DigestMismatchError):
        wrong.verify()
    right = CheckedStream(sha(b"abc"), 3, [b"a", b"bc"])
    assert b"".join(right) == b"abc"
    right.verify()


def test_rechunk_regroups_without_losing_a_byte() -> None:
    data = os.urandom(10_000)
    pieces = [data[i : i + 333] for i in range(0, len(data), 333)]
    regrouped = list(rechunk(pieces, 4096))
    assert [len(piece) for piece in regrouped] == [4096, 4096, 1808]
    assert b"".join(regrouped) == data


def test_local_backend_stores_reads_ranges_and_deletes(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "blobs")
    data = os.urandom(3 * (1 << 20) + 17)
    digest = sha(data)
    backend.put(digest, len(data), rechunk([data], 65536))
    assert backend.size(digest) == len(data)
    assert b"".join(backend.read(digest)) == data
    part = b"".join(backend.read(digest, ByteRange(1 << 20, (2 << 20) + 5)))
    assert part == data[1 << 20 : (2 << 20) + 6]
    assert (tmp_path / "blobs" / digest[:2] / digest).stat().st_mode & 0o777 == 0o600
    backend.delete(digest)
    assert backend.size(digest) is None
    with pytest.raises(BlobNotFoundError):
        backend.read(digest)
    backend.delete(digest)  # nothing to delete: nothing said


def test_local_backend_keeps_nothing_when_the_check_or_the_hook_fails(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "blobs")
    data = os.urandom(100_000)
    with pytest.raises(DigestMismatchError):
        backend.put(sha(b"other"), len(data), [data])
    with pytest.raises(SizeMismatchError):
        backend.put(sha(data), len(data) + 1, [data])

    def refuse() -> None:
        raise StorageError("the metadata could not be written")

    with pytest.raises(StorageError, match="metadata"):
        backend.put(sha(data), len(data), [data], before_publish=refuse)
    assert backend.size(sha(data)) is None
    assert list(backend.temporary.iterdir()) == []


def test_local_backend_removes_a_crashs_temporary_files_at_start(tmp_path: Path) -> None:
    LocalBackend(tmp_path / "blobs")
    leftover = tmp_path / "blobs" / "tmp" / f"{'a' * 64}.0123"
    leftover.write_bytes(b"half a blob")
    LocalBackend(tmp_path / "blobs")
    assert not leftover.exists()


def _serve(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command()(serve_storage)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, f"{result.output}{result.exception or ''}"


def test_serve_storage_refuses_what_it_cannot_serve_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFIDE_HOME", str(tmp_path / "home"))
    code, said = _serve("--host", "192.0.2.1", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code != 0 and "exposes the storage beyond this machine" in said
    code, said = _serve("--dir", str(tmp_path), "--s3-bucket", "b")
    assert code != 0 and "not both" in said
    code, said = _serve("--quota", "lots")
    assert code == 2 and "is not a size" in said
