"""App bundles and their simulation measurement.

A bundle is a directory with ``confide-app.yml`` and the app's files. Its ``sim``
measurement is SHA-256 over a canonical manifest: every directory's and file's path and
mode (special bits included) and every file's SHA-256, sorted by path, plus the
entrypoint, runtime, heap, stack, threads and the enclave runtime's identity. As with
SGX's MRENCLAVE, changing any file, mode, the heap or the stack changes it; touching
files or listing them in another order does not.
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
# runtime -> the entrypoint `confide app init` writes. "native": an executable of the
# bundle run as is (a compiled program, a script with its #! line), measured like the rest.
RUNTIMES = {"python": "app.py", "node": "app.js", "native": "app.sh"}
_LABEL = b"confide-app-measurement-v1"
_SIZE = re.compile(r"([1-9][0-9]*)([KMG]?)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_FIELDS = {"name", "entrypoint", "runtime", "heap", "stack", "threads"}


# libyaml's parser where PyYAML has it (the runtime reads a manifest per task: a fifth of
# the time of the pure-Python one), with the same safe constructors
try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover (a PyYAML built without libyaml)
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _StrictLoader(_SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (PyYAML keeps the last silently,
    so a reader and the runtime could see different entrypoints)."""


def _mapping_without_duplicates(loader: _SafeLoader, node: yaml.MappingNode) -> Any:
    keys = [loader.construct_object(key) for key, _ in node.value]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:
        raise yaml.constructor.ConstructorError(
            None, None, f"key {sorted(map(str, duplicated))[0]!r} is given twice", node.start_mark
        )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


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
        data = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (safe loader)
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
    if runtime == "native" and not (bundle / entrypoint).stat().st_mode & stat.S_IXUSR:
        raise AttestationError(
            f"{path}: a native app's entrypoint {entrypoint!r} must be executable "
            f"(chmod +x {entrypoint})"
        )
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


def _refuse_walk_error(error: OSError) -> None:
    raise AttestationError(f"cannot read {error.filename} while measuring: {error.strerror}")


def bundle_entries(bundle: Path) -> list[list[object]]:
    """Every directory and file with its full mode (setuid and sticky bits included) and,
    for files, SHA-256; sorted. Links and devices are refused, and so is anything that
    cannot be read: an unreadable file must not drop out of the measurement."""
    entries: list[list[object]] = []
    for directory, subdirs, names in os.walk(bundle, onerror=_refuse_walk_error):
        for name in [*subdirs, *names]:
            full = os.path.join(directory, name)
            info = os.lstat(full)
            relative = Path(full).relative_to(bundle).as_posix()
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                raise AttestationError(f"{relative}: bundles cannot hold symbolic links")
            if stat.S_ISDIR(info.st_mode):
                entries.append([relative, mode, "dir"])
            elif stat.S_ISREG(info.st_mode):
                try:
                    entries.append([relative, mode, sha256_file(full)])
                except OSError as exc:
                    raise AttestationError(f"cannot read {relative}: {exc.strerror}") from None
            else:
                raise AttestationError(f"{relative}: not a regular file or directory")
    return sorted(entries, key=lambda entry: str(entry[0]))


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
        "entries": bundle_entries(bundle),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return Measurement("sim", sha256_hex(lp(_LABEL) + canonical))
