"""The volume manifest: which paths exist, with what mode and size, in which object.

It is encrypted and authenticated (AES-256-GCM with the header as associated data), so
an attacker without the key can neither read nor change it. It is still checked strictly
when read: a manifest comes from whoever holds the key, and decryption must never write
outside its destination whatever the manifest says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from confide.errors import VolumeIntegrityError
from confide.jsonsafe import JsonTooDeepError, loads_bounded
from confide.volume.format import FORMAT_VERSION

_OBJECT_NAME = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_FILE_SIZE = 1 << 50


@dataclass(frozen=True)
class DirEntry:
    path: str
    mode: int


@dataclass(frozen=True)
class FileEntry:
    path: str
    mode: int
    size: int
    object_id: str
    digest: str


@dataclass(frozen=True)
class Manifest:
    dirs: tuple[DirEntry, ...]
    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """Canonical JSON: entries sorted by path, keys sorted, no white space."""
        entries: list[dict[str, Any]] = [
            {"path": d.path, "type": "dir", "mode": d.mode} for d in self.dirs
        ]
        entries += [
            {
                "path": f.path,
                "type": "file",
                "mode": f.mode,
                "size": f.size,
                "object": f.object_id,
                "digest": f.digest,
            }
            for f in self.files
        ]
        entries.sort(key=lambda e: str(e["path"]))
        document = {"format": FORMAT_VERSION, "entries": entries}
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def check_relative_path(path: str) -> None:
    """Refuse a path that is empty, absolute, not UTF-8, or would climb out (``..``) or
    alias (``.``)."""
    if not path or path.startswith("/") or "\x00" in path:
        raise ValueError(path)
    path.encode("utf-8")  # a lone surrogate cannot name a file: UnicodeEncodeError
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(path)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("an object has a duplicate key")
    return dict(pairs)


def parse_manifest(plaintext: bytes, volume: str) -> Manifest:
    """Parse and strictly validate a decrypted manifest."""

    def bad(why: str) -> VolumeIntegrityError:
        return VolumeIntegrityError(f"volume {volume}: manifest is invalid: {why}")

    try:
        document = loads_bounded(plaintext, 4, object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, JsonTooDeepError):
        raise bad("not JSON (or nested too deeply)") from None
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not isinstance(document, dict) or set(document) != {"format", "entries"}:
        raise bad("not a manifest object")
    version = document["format"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise bad("unknown format")
    raw_entries = document.get("entries")
    if not isinstance(raw_entries, list):
        raise bad("no entries")
    dirs: list[DirEntry] = []
    files: list[FileEntry] = []
    kinds: dict[str, str] = {}
    objects: set[str] = set()
    entries = [_parse_entry(raw, bad) for raw in raw_entries]
    for entry in entries:
        if entry.path in kinds:
            raise bad(f"path {entry.path!r} listed twice")
        kinds[entry.path] = "dir" if isinstance(entry, DirEntry) else "file"
    for entry in entries:  # entry order is not checked: parents may come after children
        parent = entry.path.rpartition("/")[0]
        if parent and kinds.get(parent) != "dir":
            raise bad(f"parent of {entry.path!r} is not a listed directory")
        if isinstance(entry, FileEntry):
            if entry.object_id in objects:
                raise bad(f"object {entry.object_id} used twice")
            objects.add(entry.object_id)
            files.append(entry)
        else:
            dirs.append(entry)
    dirs.sort(key=lambda d: d.path)  # parents before children when directories are made
    return Manifest(tuple(dirs), tuple(files))


def _parse_entry(raw: Any, bad: Any) -> DirEntry | FileEntry:
    if not isinstance(raw, dict):
        raise bad("entry is not an object")
    path, kind, mode = raw.get("path"), raw.get("type"), raw.get("mode")
    if not isinstance(path, str):
        raise bad("entry without a path")
    try:
        check_relative_path(path)
    except ValueError:  # UnicodeEncodeError included
        raise bad(f"path {path!r} would escape the destination") from None
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise bad(f"mode of {path!r} is out of range")
    if kind == "dir" and set(raw) == {"path", "type", "mode"}:
        return DirEntry(path, mode)
    if kind == "file" and set(raw) == {"path", "type", "mode", "size", "object", "digest"}:
        size, object_id, digest = raw["size"], raw["object"], raw["digest"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
            raise bad(f"size of {path!r} is out of range")
        if not isinstance(object_id, str) or not _OBJECT_NAME.fullmatch(object_id):
            raise bad(f"object name of {path!r} is malformed")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise bad(f"digest of {path!r} is malformed")
        return FileEntry(path, mode, size, object_id, digest)
    raise bad(f"entry {path!r} has unexpected fields or type")
