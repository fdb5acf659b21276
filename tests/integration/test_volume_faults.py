"""Real faults part way through: a full disk, a file-size limit, a permission error, a kill.

Each leaves a clear one-line error, exit status 1, and no partial tree at the destination.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from confide.crypto import SymmetricKey, write_key_file
from confide.volume import encrypt_tree
from tests.conftest import CONFIDE, MIB, assert_refusal, run_cli, tree_state


def _userns_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


needs_userns = pytest.mark.skipif(not _userns_available(), reason="no user namespaces")


def _make_volume(tmp_path: Path, files: int, size: int) -> tuple[Path, Path, str]:
    """A source tree of ``files`` random files, its volume, key file and tag."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for index in range(files):
        (src / "d" / f"part{index}").write_bytes(os.urandom(size))
    key = SymmetricKey.generate()
    write_key_file(tmp_path / "k.key", key)
    result = encrypt_tree(src, tmp_path / "vol", key)
    return tmp_path / "vol", tmp_path / "k.key", result.tag


@pytest.fixture
def big_volume(tmp_path: Path) -> tuple[Path, Path, str]:
    return _make_volume(tmp_path, 4, 3 * MIB)


def _in_small_tmpfs(mountpoint: Path, size: str, command: list[str]) -> list[str]:
    """Output lines: the command's ``rc=N``, then what the tmpfs holds afterwards."""
    quoted = " ".join(f"'{part}'" for part in command)
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "$1" && {{ {quoted}; echo "rc=$?"; }}; ls -A "$1"'
    )
    proc = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
            str(mountpoint),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.stderr.count("error: ") == 1, proc.stderr
    assert "No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.strip().splitlines()


@needs_userns
def test_disk_full_during_decrypt_leaves_nothing(
    tmp_path: Path, big_volume: tuple[Path, Path, str]
) -> None:
    vol, key_file, tag = big_volume
    small = tmp_path / "small"
    small.mkdir()
    command = [
        *CONFIDE,
        "volume",
        "decrypt",
        str(vol),
        str(small / "out"),
        "--key-file",
        str(key_file),
        "--tag",
        tag,
    ]
    # exit status 1, and the tmpfs is empty: no output tree, no staging directory
    assert _in_small_tmpfs(small, "5m", command) == ["rc=1"]


@needs_userns
def test_disk_full_during_encrypt_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(6 * MIB))
    small = tmp_path / "small"
    small.mkdir()
    command = [*CONFIDE, "volume", "encrypt", str(src), str(small / "vol")]
    assert _in_small_tmpfs(small, "4m", command) == ["rc=1"]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MIB, 2 * MIB))


def test_file_size_limit_part_way_through_decrypt(
    tmp_path: Path, big_volume: tuple[Path, Path, str]
) -> None:
    vol, key_file, tag = big_volume
    proc = run_cli(
        "volume",
        "decrypt",
        vol,
        tmp_path / "out",
        "--key-file",
        key_file,
        "--tag",
        tag,
        preexec_fn=_limit_file_size,
    )
    assert_refusal(proc, "cannot", "File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "src", "vol"]


@pytest.mark.skipif(shutil.which("chattr") is None, reason="no chattr")
def test_permission_error_on_destination(
    tmp_path: Path, big_volume: tuple[Path, Path, str]
) -> None:
    vol, key_file, _tag = big_volume
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], check=False).returncode != 0:
        pytest.skip("file system does not support the immutable attribute")
    try:
        proc = run_cli("volume", "decrypt", vol, locked / "out", "--key-file", key_file)
        assert_refusal(proc, "Operation not permitted")
        assert list(locked.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


def _decrypt_caught_mid_way(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path, str]:
    """Start a CLI decrypt of a 128 MiB volume; return once its staging directory exists."""
    vol, key_file, tag = _make_volume(tmp_path, 32, 4 * MIB)
    process = subprocess.Popen(
        [
            *CONFIDE,
            "volume",
            "decrypt",
            str(vol),
            str(tmp_path / "out"),
            "--key-file",
            str(key_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.001)
    return process, vol, key_file, tag


def test_killed_decrypt_leaves_no_destination_and_can_be_rerun(tmp_path: Path) -> None:
    process, vol, key_file, tag = _decrypt_caught_mid_way(tmp_path)
    out = tmp_path / "out"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(leftovers) == 1  # what the killed process could not clean up
    proc = run_cli("volume", "decrypt", vol, out, "--key-file", key_file, "--tag", tag)
    assert proc.returncode == 0, proc.stderr
    assert tree_state(out) == tree_state(tmp_path / "src")
    assert not leftovers[0].exists()  # swept: it may have held unverified plaintext
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "out", "src", "vol"]


def test_sigterm_during_decrypt_cleans_up(tmp_path: Path) -> None:
    process, _vol, _key_file, _tag = _decrypt_caught_mid_way(tmp_path)
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "src", "vol"]
