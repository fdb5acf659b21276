"""extract_tar: regular files and directories only, under dest, bounded; every refusal
names the entry and leaves nothing behind."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from confide.sandbox import SandboxError, extract_tar

Member = tuple[tarfile.TarInfo, bytes | None]


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, **fields: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info, None


def make_tar(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tree(root: Path) -> dict[str, str]:
    found = {}
    for directory, subdirs, names in os.walk(root):
        for name in subdirs:
            found[os.path.relpath(Path(directory, name), root)] = "dir"
        for name in names:
            found[os.path.relpath(Path(directory, name), root)] = Path(directory, name).read_text()
    return found


def test_extracts_files_and_directories(tmp_path: Path) -> None:
    directory = tarfile.TarInfo("app")
    directory.type = tarfile.DIRTYPE
    directory.mode = 0o755
    tar = make_tar(
        tmp_path / "b.tar",
        [
            (directory, None),
            file("app/main.py", b"print(1)", 0o755),
            file("./app/deep/er/data.txt", b"data", 0o600),
            file("top.txt", b"top"),
        ],
    )
    dest = tmp_path / "out"
    extract_tar(tar, dest, max_bytes=100, max_files=10)
    assert tree(dest) == {
        "app": "dir",
        "app/deep": "dir",
        "app/deep/er": "dir",
        "app/main.py": "print(1)",
        "app/deep/er/data.txt": "data",
        "top.txt": "top",
    }
    assert stat.S_IMODE((dest / "app/main.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "app/deep/er/data.txt").stat().st_mode) == 0o600


REFUSALS: dict[str, tuple[Callable[[], list[Member]], str]] = {
    "dotdot": (lambda: [file("ok.txt"), file("a/../../evil")], "contains '..'"),
    "absolute": (lambda: [file("/etc/evil")], "absolute"),
    "symlink": (
        lambda: [special("link", tarfile.SYMTYPE, linkname="/etc/passwd")],
        "symbolic link",
    ),
    "hardlink": (
        lambda: [file("ok.txt"), special("hard", tarfile.LNKTYPE, linkname="ok.txt")],
        "hard link",
    ),
    "device": (lambda: [special("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)], "device"),
    "block": (lambda: [special("blk", tarfile.BLKTYPE, devmajor=8, devminor=0)], "device"),
    "fifo": (lambda: [special("fifo", tarfile.FIFOTYPE)], "fifo"),
    "setuid": (lambda: [file("suid", mode=0o4755)], "setuid"),
    "setgid": (lambda: [file("sgid", mode=0o2755)], "setuid, setgid or sticky"),
    "sticky": (lambda: [special("d", tarfile.DIRTYPE, mode=0o1777)], "sticky"),
    "too-big": (lambda: [file("a", b"x" * 60), file("b", b"y" * 60)], "exceed 100 bytes"),
    "too-many": (lambda: [file(f"f{i}") for i in range(11)], "more than 10 entries"),
    "duplicate": (lambda: [file("a"), file("a")], "appears twice"),
    "file-then-dir": (lambda: [file("a"), file("a/b")], "under a file"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_entry_and_leave_nothing(tmp_path: Path, case: str) -> None:
    members, expected = REFUSALS[case]
    built = members()
    tar = make_tar(tmp_path / "bad.tar", built)
    dest = tmp_path / "out"
    with pytest.raises(SandboxError, match=re.escape(expected)) as raised:
        extract_tar(tar, dest, max_bytes=100, max_files=10)
    offending = built[-1][0].name
    assert repr(offending) in str(raised.value)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_existing_dest_must_be_empty_and_is_emptied_on_refusal(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old").write_text("x")
    tar = make_tar(tmp_path / "ok.tar", [file("a")])
    with pytest.raises(SandboxError, match="empty directory"):
        extract_tar(tar, dest, max_bytes=100, max_files=10)
    (dest / "old").unlink()
    bad = make_tar(tmp_path / "bad.tar", [file("a"), file("sub/b"), file("/abs")])
    with pytest.raises(SandboxError, match="absolute"):
        extract_tar(bad, dest, max_bytes=100, max_files=10)
    assert dest.is_dir() and list(dest.iterdir()) == []


def test_not_a_tar(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(SandboxError, match=r"cannot extract junk\.tar"):
        extract_tar(junk, tmp_path / "out", max_bytes=100, max_files=10)
    assert not (tmp_path / "out").exists()
