"""Shared fixtures: small trees to encrypt, keys, and helpers to tamper with volumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from confide.crypto import SymmetricKey
from confide.volume import VolumeResult, encrypt_tree

MIB = 1 << 20
SECRET_MARKER = b"TOP-SECRET-PLAINTEXT-MARKER"


def make_tree(root: Path) -> dict[str, bytes]:
    """A small tree exercising every case: empty file and dir, 1-3 segment files, modes."""
    files = {
        "hello.txt": b"hello " + SECRET_MARKER + b"\n",
        "empty": b"",
        "docs/readme.md": b"# readme\n" * 100,
        "docs/deep/er/one-segment.bin": os.urandom(MIB),
        "docs/deep/er/three-segments.bin": os.urandom(2 * MIB + 12345),
        "unicode/caf\u00e9 \u2603.txt": SECRET_MARKER * 3,
    }
    root.mkdir(parents=True)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    os.chmod(root / "hello.txt", 0o640)
    os.chmod(root / "docs/deep/er/one-segment.bin", 0o600)
    os.chmod(root / "docs/deep", 0o750)
    return files


def tree_state(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``root`` with its kind, permission bits and content."""
    state: dict[str, tuple[str, int, bytes]] = {}
    for directory, subdirs, names in os.walk(root):
        for name in subdirs:
            path = Path(directory, name)
            state[str(path.relative_to(root))] = ("dir", path.stat().st_mode & 0o777, b"")
        for name in names:
            path = Path(directory, name)
            state[str(path.relative_to(root))] = (
                "file",
                path.stat().st_mode & 0o777,
                path.read_bytes(),
            )
    return state


@pytest.fixture
def key() -> SymmetricKey:
    return SymmetricKey.generate()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_tree(root)
    return root


@pytest.fixture
def volume(tmp_path: Path, source: Path, key: SymmetricKey) -> tuple[Path, VolumeResult]:
    target = tmp_path / "vol"
    return target, encrypt_tree(source, target, key)


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


Mutator = Callable[[Path], None]


CONFIDE = [sys.executable, "-m", "confide"]


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    prefix: Sequence[str] = (),
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run the ``confide`` command as a user types it; never raises on exit status."""
    return subprocess.run(
        [*prefix, *CONFIDE, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


def assert_refusal(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1 with exactly one ``error: …`` line on stderr naming every fragment."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on a database (those taking ``database_url``) are marked ``database``: .ci/run
    runs them a second time with CONFIDE_DB_DIRECT=0, through SQLAlchemy's public path."""
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.database)


def _postgres_url() -> str | None:
    return os.environ.get("CONFIDE_TEST_PG") or None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: an SQLite file, or a private schema of CONFIDE_TEST_PG's database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'confide.db'}"
        return
    base = _postgres_url()
    if base is None:
        pytest.skip("CONFIDE_TEST_PG is not set")
    import psycopg

    schema = f"confide_test_{os.urandom(6).hex()}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def quick_wallet(home: Path, password: str) -> str:
    """Write a wallet keystore at ``home/wallet.json`` (mode 0600) as `confide wallet
    create` would, but with PBKDF2 at 1,000 rounds instead of scrypt at 2^18: a valid v3
    keystore that every signed command of a test unlocks in a millisecond, not in two
    seconds. Its address."""
    from eth_account import Account  # a dev dependency: tests only

    account = Account.create()
    document = Account.encrypt(account.key, password, kdf="pbkdf2", iterations=1000)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / "wallet.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    return str(account.address).lower()
