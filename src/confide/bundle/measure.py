"""App bundles and their simulation measurement.

A bundle is a directory with ``confide-app.yml`` and the app's files. Its ``sim``
measurement is SHA-256 over a canonical manifest: every file's path, permission bits and
SHA-256, sorted by path, plus the entrypoint, runtime, heap, stack, threads and the
enclave runtime's identity. As with SGX's MRENCLAVE, changing any file, mode, the heap
or the stack changes it; touching files or listing them in another order does not.
Every file counts, hidden ones and ``__pycache__`` included: a file that can change what
runs must change the measurement.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from confide.attestation.measurement import Measurement
from confide.crypto.digest import sha256_file, sha256_hex
from confide.crypto.encoding import lp
from confide.errors import AttestationError

MANIFEST_NAME = "confide-app.yml"
RUNTIME_IDENTITY = "confide-enclave-runtime/1"  # bump when the runtime's behaviour changes
RUNTIMES = {"python": "app.py", "node": "app.js"}
_LABEL = b"confide-app-measurement-v1"
_SIZE = re.compile(r"([1-9][0-9]*)([KMG]?)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_FIELDS = {"name", "entrypoint", "runtime", "heap", "stack", "threads"}


@dataclass(frozen=True)
class AppManifest:
    name: str
    entrypoint: str
    runtime: str
    heap: int
    stack: int
    threads: int


def parse_size(value: Any, where: str) -> int:
    """``64M`` → 67108864; K, M, G are powers of 1024."""
    match = _SIZE.fullmatch(str(value).strip().upper()) if isinstance(value, str | int) else None
    if match is None or isinstance(value, bool):
        raise AttestationError(f"{where}: a size is a number with an optional K, M or G (64M)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def read_manifest(bundle: Path) -> AppManifest:
    path = bundle / MANIFEST_NAME
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise AttestationError(
            f"{bundle} is not an app bundle (no {MANIFEST_NAME}; create one with "
            f"`confide app init {bundle}`)"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AttestationError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise AttestationError(f"{path}: expected a mapping of {', '.join(sorted(_FIELDS))}")
    unknown = sorted(set(data) - _FIELDS)
    missing = sorted(_FIELDS - set(data))
    if unknown:
        raise AttestationError(f"{path}: unknown field {unknown[0]!r}")
    if missing:
        raise AttestationError(f"{path}: missing field {missing[0]!r}")
    runtime, entrypoint = data["runtime"], data["entrypoint"]
    if runtime not in RUNTIMES:
        raise AttestationError(f"{path}: runtime is one of {', '.join(RUNTIMES)}")
    if not isinstance(entrypoint, str) or not (bundle / entrypoint).is_file():
        raise AttestationError(f"{path}: entrypoint {entrypoint!r} is not a file of the bundle")
    if Path(entrypoint).is_absolute() or ".." in Path(entrypoint).parts:
        raise AttestationError(f"{path}: entrypoint must be a relative path inside the bundle")
    threads = data["threads"]
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 1024:
        raise AttestationError(f"{path}: threads is a whole number from 1 to 1024")
    return AppManifest(
        name=str(data["name"]),
        entrypoint=Path(entrypoint).as_posix(),
        runtime=runtime,
        heap=parse_size(data["heap"], f"{path}: heap"),
        stack=parse_size(data["stack"], f"{path}: stack"),
        threads=threads,
    )


def bundle_files(bundle: Path) -> list[tuple[str, int, str]]:
    """(path, permission bits, SHA-256) of every file, sorted; links and devices refused."""
    files: list[tuple[str, int, str]] = []
    for directory, subdirs, names in os.walk(bundle):
        subdirs.sort()
        for name in [*subdirs, *names]:
            full = os.path.join(directory, name)
            info = os.lstat(full)
            relative = Path(full).relative_to(bundle).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise AttestationError(f"{relative}: bundles cannot hold symbolic links")
            if stat.S_ISREG(info.st_mode):
                files.append((relative, stat.S_IMODE(info.st_mode) & 0o777, sha256_file(full)))
            elif not stat.S_ISDIR(info.st_mode):
                raise AttestationError(f"{relative}: not a regular file or directory")
    return sorted(files)


def measure_bundle(bundle: Path) -> Measurement:
    """The ``sim:`` measurement of an app bundle."""
    if not bundle.is_dir():
        raise AttestationError(f"{bundle} is not a directory")
    manifest = read_manifest(bundle)
    document = {
        "runtime_identity": RUNTIME_IDENTITY,
        "entrypoint": manifest.entrypoint,
        "runtime": manifest.runtime,
        "heap": manifest.heap,
        "stack": manifest.stack,
        "threads": manifest.threads,
        "files": [[path, mode, digest] for path, mode, digest in bundle_files(bundle)],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return Measurement("sim", sha256_hex(lp(_LABEL) + canonical))
