"""What the enclave runtime needs from the host to run inside Gramine: the interpreter, its
shared libraries, its standard library, the installed distributions confide's runtime
depends on (their files, as their RECORD lists them, not whole site-packages), the
confide package, the CA bundle TLS trusts and, for node apps, node and its libraries.

Every file is listed with its SHA-256, computed here, so the manifest pins exactly the
bytes this machine holds: the worker image that runs the enclave must hold the same files
at the same paths, or Gramine refuses to open them (and the enclave fails closed).
``__pycache__`` is left out (bytecode depends on timestamps; Python falls back to the
trusted source when a ``.pyc`` cannot be opened, and never writes one:
``PYTHONDONTWRITEBYTECODE``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import confide
from confide.crypto.digest import sha256_file
from confide.errors import ConfideError

# glibc's own libraries come from Gramine's patched runtime (mounted at /lib), never the host.
GRAMINE_GLIBC = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libm.so.6",
        "libmvec.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "libanl.so.1",
        "libnsl.so.1",
        "libnss_dns.so.2",
        "libnss_files.so.2",
    }
)
# stdlib parts the runtime never imports and that only add files to hash
_STDLIB_SKIP = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3"}
)
_DYNLOAD_SKIP = ("_tkinter.", "_curses", "readline.")  # X11, terminal UI: never imported
_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class RuntimeFilesError(ConfideError):
    """The host's runtime files cannot be listed (a missing file, ldd failing)."""


@dataclass(frozen=True)
class HostFile:
    path: Path  # absolute, as the enclave opens it (the same path on the host)
    sha256: str


@dataclass(frozen=True)
class RuntimeFiles:
    """The host side of the enclave runtime."""

    executable: Path  # the interpreter (libos.entrypoint), symbolic links resolved
    home: Path  # PYTHONHOME: the interpreter's installation prefix
    python_path: tuple[Path, ...]  # PYTHONPATH: the confide package's root, site-packages
    ca_bundle: Path  # SSL_CERT_FILE: the CA bundle the runtime's TLS trusts
    files: tuple[HostFile, ...]  # every trusted host file, sorted by path
    library_dirs: tuple[Path, ...] = ()  # where ldd found the shared libraries
    node: Path | None = None  # node apps: the node executable

    def roots(self) -> tuple[Path, ...]:
        """The fewest host directories that hold every trusted file (each is mounted at
        the same path in the enclave)."""
        candidates = {self.home, *self.python_path, *self.library_dirs}
        candidates |= {f.path.parent for f in self.files}
        ordered = sorted(candidates, key=lambda p: (len(p.parts), str(p)))
        kept: list[Path] = []
        for candidate in ordered:
            if not _inside_any(candidate, kept):
                kept.append(candidate)
        return tuple(sorted(kept))


def _inside_any(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _hash(paths: Iterable[Path]) -> list[HostFile]:
    found: list[HostFile] = []
    for path in paths:
        try:
            found.append(HostFile(path, sha256_file(str(path))))
        except OSError as exc:
            raise RuntimeFilesError(
                f"cannot read {path} for the manifest: {exc.strerror}"
            ) from None
    return found


def _tree(root: Path, skip: frozenset[str] = frozenset()) -> list[Path]:
    """Every regular file under ``root`` (links followed as files), ``__pycache__`` and
    the top-level names in ``skip`` left out."""
    found: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        top = Path(directory) == root
        subdirs[:] = [d for d in subdirs if d != "__pycache__" and not (top and d in skip)]
        for name in names:
            path = Path(directory, name)
            if path.is_file():
                found.append(path)
    return found


def shared_libraries(binaries: Iterable[Path]) -> list[Path]:
    """The shared libraries ``binaries`` load (``ldd``), glibc's own left out: Gramine's
    runtime provides those. Paths as the loader finds them (links not resolved)."""
    targets = [str(b) for b in binaries]
    if not targets:
        return []
    ldd = shutil.which("ldd")
    if ldd is None:
        raise RuntimeFilesError("ldd is not installed: cannot list the interpreter's libraries")
    done = subprocess.run([ldd, *targets], capture_output=True, text=True, check=False)
    libraries: set[Path] = set()
    for line in done.stdout.splitlines():
        match = _LDD_LINE.match(line)
        if match is None:
            continue
        path = Path(os.path.normpath(match.group(2)))
        if path.name in GRAMINE_GLIBC or path.name.startswith("ld-linux"):
            continue
        libraries.add(path)
    return sorted(libraries)


def _dependency_closure(root: str) -> list[metadata.Distribution]:
    """The installed distributions ``root`` needs, itself included: requirements without
    a marker, or whose marker is not an extra, when installed; an extra's requirements
    when it was asked for (``psycopg[binary]``)."""
    wanted: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: dict[str, set[str]] = {}
    found: list[metadata.Distribution] = []
    while wanted:
        name, extras = wanted.pop()
        normal = re.sub(r"[-_.]+", "-", name).lower()
        if normal in seen and extras <= seen[normal]:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a platform marker left it out (uvloop on Windows, …)
        if normal not in seen:
            found.append(distribution)
        seen.setdefault(normal, set()).update(extras)
        for requirement in distribution.requires or []:
            text, _, marker = requirement.partition(";")
            match = _REQUIREMENT.match(text)
            if match is None:
                continue
            extra = _EXTRA_MARKER.search(marker)
            if extra is not None and extra.group(1) not in extras:
                continue
            asked = frozenset(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
            wanted.append((match.group(1), asked))
    return found


def _distribution_files(distribution: metadata.Distribution, package_root: Path) -> list[Path]:
    files: list[Path] = []
    for entry in distribution.files or []:
        path = Path(str(distribution.locate_file(entry))).absolute()
        if "__pycache__" in path.parts or _inside_any(path, [package_root]):
            continue
        if path.suffix == ".pth" or not path.is_file():
            continue  # an editable install's finder: the package is listed from its tree
        files.append(path)
    return files


def _ca_bundle() -> Path:
    try:
        import certifi  # noqa: PLC0415 (httpx's dependency: its CA bundle)
    except ImportError:  # pragma: no cover (httpx needs certifi)
        return Path("/etc/ssl/certs/ca-certificates.crt")
    return Path(certifi.where())


def current_runtime_files(runtime: str = "python") -> RuntimeFiles:
    """This interpreter's runtime files (the one running confide), for an app of
    ``runtime`` (python, node or native)."""
    executable = Path(os.path.realpath(sys.executable))
    home = Path(sys.base_prefix)
    stdlib = Path(sysconfig.get_paths()["stdlib"])  # the base interpreter's, in a venv too
    package_root = Path(confide.__file__).resolve().parent.parent
    site = [
        Path(p) for p in dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    ]
    paths: set[Path] = {executable, *_tree(stdlib, _STDLIB_SKIP)}
    paths = {p for p in paths if not p.name.startswith(_DYNLOAD_SKIP)}
    paths |= set(_tree(package_root / "confide"))
    closure = _dependency_closure("confide")
    if not closure:
        raise RuntimeFilesError(
            "confide is not installed as a distribution here (pip install -e .): its "
            "dependencies cannot be listed as trusted files"
        )
    for distribution in closure:
        paths |= set(_distribution_files(distribution, package_root))
    ca_bundle = _ca_bundle()
    paths.add(ca_bundle)
    node = None
    if runtime == "node":
        found = shutil.which("node")
        if found is None:
            raise RuntimeFilesError("a node app needs node on this machine to trust it")
        node = Path(os.path.realpath(found))
        paths.add(node)
    binaries = [p for p in paths if p.suffix == ".so" or ".so." in p.name]
    libraries = shared_libraries([executable, *([node] if node else []), *sorted(binaries)])
    paths |= set(libraries)
    return RuntimeFiles(
        executable=executable,
        home=home,
        python_path=(package_root, *site),
        ca_bundle=ca_bundle,
        files=tuple(sorted(_hash(paths), key=lambda f: str(f.path))),
        library_dirs=tuple(sorted({p.parent for p in libraries})),
        node=node,
    )
