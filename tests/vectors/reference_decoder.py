"""Independent decoder for the encrypted volume format, version 1.

Written from ``docs/volume-format.md`` alone, to check that the page is precise enough.
Reads whole objects into memory: clarity over speed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pathlib
import re
import struct
from dataclasses import dataclass
from typing import Any

from blake3 import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"CONFIDEV"
HEADER_LEN = 40
TAG_LEN = 32
GCM_TAG_LEN = 16
SEGMENT_SIZE = 1048576
SALT = b"confide-volume"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
DIR_FIELDS = frozenset({"mode", "path", "type"})
FILE_FIELDS = frozenset({"digest", "mode", "object", "path", "size", "type"})


class ReferenceError(Exception):
    """The volume is malformed, tampered with, or the key is wrong."""


@dataclass(frozen=True)
class DecodedEntry:
    kind: str  # "dir" or "file"
    mode: int
    content: bytes  # b"" for dirs


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def hkdf(key: bytes, label: str, context: bytes) -> bytes:
    info = lp(label.encode("ascii")) + context
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(key)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ReferenceError("manifest: duplicate JSON key")
    return doc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or "\x00" in path:
        raise ReferenceError(f"manifest: bad path {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ReferenceError(f"manifest: bad path component in {path!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ReferenceError(f"manifest: path {path!r} is not valid UTF-8") from None
    return path


def _check_entry(entry: dict[str, Any]) -> str:
    kind = entry.get("type")
    fields = DIR_FIELDS if kind == "dir" else FILE_FIELDS if kind == "file" else None
    if fields is None or set(entry) != fields:
        raise ReferenceError(f"manifest: bad entry fields {sorted(entry)}")
    path = _check_path(entry["path"])
    if not _is_int(entry["mode"]) or not 0 <= entry["mode"] <= 0o777:
        raise ReferenceError(f"manifest: bad mode for {path}")
    if entry["type"] == "file":
        if not _is_int(entry["size"]) or entry["size"] < 0:
            raise ReferenceError(f"manifest: bad size for {path}")
        obj, digest = entry["object"], entry["digest"]
        if not isinstance(obj, str) or not HEX32.fullmatch(obj):
            raise ReferenceError(f"manifest: bad object id for {path}")
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise ReferenceError(f"manifest: bad digest for {path}")
    return path


def parse_manifest(plaintext: bytes) -> list[dict[str, Any]]:
    try:
        doc = json.loads(plaintext.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReferenceError(f"manifest: not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"entries", "format"}:
        raise ReferenceError("manifest: top level must be exactly {entries, format}")
    if not _is_int(doc["format"]) or doc["format"] != 1:
        raise ReferenceError(f"manifest: unsupported format {doc['format']!r}")
    entries = doc["entries"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ReferenceError("manifest: entries must be a list of objects")
    kinds: dict[str, str] = {}
    objects: set[str] = set()
    for entry in entries:
        path = _check_entry(entry)
        if path in kinds:
            raise ReferenceError(f"manifest: path listed twice: {path}")
        kinds[path] = entry["type"]
        if entry["type"] == "file":
            if entry["object"] in objects:
                raise ReferenceError(f"manifest: object used twice: {entry['object']}")
            objects.add(entry["object"])
    paths = [e["path"] for e in entries]  # readers do not check order or canonical form
    for path in paths:
        parent = path.rpartition("/")[0]
        if parent and kinds.get(parent) != "dir":
            raise ReferenceError(f"manifest: parent of {path} is not listed as a dir")
    return entries


def open_object(
    data: bytes, key: bytes, object_id: bytes, prefix: bytes, size: int
) -> tuple[bytes, str]:
    """Check the length, open every segment; return (plaintext, recomputed digest)."""
    n = max(1, -(-size // SEGMENT_SIZE))
    if len(data) != size + GCM_TAG_LEN * n:
        raise ReferenceError(f"object {object_id.hex()}: wrong length")
    aead = AESGCM(hkdf(key, "confide-volume object-key", prefix + object_id))
    digest_input = lp(b"confide-volume object-digest") + struct.pack(">Q", n)
    plaintext = bytearray()
    step = SEGMENT_SIZE + GCM_TAG_LEN
    for i in range(n):
        sealed = data[i * step : (i + 1) * step]
        nonce = i.to_bytes(11, "big") + (b"\x01" if i == n - 1 else b"\x00")
        try:
            plaintext += aead.decrypt(nonce, sealed, b"")
        except InvalidTag as exc:
            raise ReferenceError(f"object {object_id.hex()}: segment {i} fails") from exc
        digest_input += blake3(sealed).digest()
    return bytes(plaintext), blake3(digest_input).hexdigest()


def read_header_and_tag(
    volume_dir: pathlib.Path, key: bytes, expected_tag: bytes | None
) -> tuple[bytes, bytes, bytes, bytes]:
    """Steps 1-2: check the header, recompute and compare the tag."""
    blob = (volume_dir / "volume.fspf").read_bytes()
    if len(blob) < HEADER_LEN:
        raise ReferenceError("volume.fspf shorter than the header")
    header = blob[:HEADER_LEN]
    magic, version, suite, seg, vid, m_len = struct.unpack(">8sHHI16sQ", header)
    if magic != MAGIC or version != 1 or suite != 1 or seg != SEGMENT_SIZE:
        raise ReferenceError(f"unsupported header (version {version}, suite {suite})")
    if len(blob) != HEADER_LEN + m_len + TAG_LEN:
        raise ReferenceError("volume.fspf length does not match the manifest length")
    manifest_ct, stored_tag = blob[HEADER_LEN:-TAG_LEN], blob[-TAG_LEN:]
    prefix = struct.pack(">H", 1) + vid
    tag_key = hkdf(key, "confide-volume tag-key", prefix)
    tag = hmac.new(tag_key, header + manifest_ct, hashlib.sha256).digest()
    if expected_tag is not None and not hmac.compare_digest(tag, expected_tag):
        if hmac.compare_digest(tag, stored_tag):
            raise ReferenceError("volume is intact but another version than expected")
        raise ReferenceError("authentication failed (wrong key or tampering)")
    if not hmac.compare_digest(tag, stored_tag):
        raise ReferenceError("authentication failed (wrong key or tampering)")
    return header, manifest_ct, prefix, tag


def decode_volume(
    volume_dir: pathlib.Path, key: bytes, expected_tag: bytes | None = None
) -> tuple[bytes, dict[str, DecodedEntry]]:
    """Check everything the spec lists for a reader; return (tag, {path: entry})."""
    try:
        return _decode(volume_dir, key, expected_tag)
    except OSError as exc:
        raise ReferenceError(f"cannot read the volume: {exc}") from exc


def _decode(
    volume_dir: pathlib.Path, key: bytes, expected_tag: bytes | None
) -> tuple[bytes, dict[str, DecodedEntry]]:
    if len(key) != 32:
        raise ReferenceError("volume key must be 32 bytes")
    if sorted(p.name for p in volume_dir.iterdir()) != ["objects", "volume.fspf"]:
        raise ReferenceError("volume directory must hold exactly volume.fspf and objects/")
    header, manifest_ct, prefix, tag = read_header_and_tag(volume_dir, key, expected_tag)
    # 3. Manifest.
    manifest_key = hkdf(key, "confide-volume manifest-key", prefix)
    try:
        manifest = AESGCM(manifest_key).decrypt(bytes(12), manifest_ct, header)
    except InvalidTag as exc:
        raise ReferenceError("manifest does not decrypt") from exc
    entries = parse_manifest(manifest)
    # 4. Exact object set.
    objects_dir = volume_dir / "objects"
    if not objects_dir.is_dir() or objects_dir.is_symlink():
        raise ReferenceError("objects/ is not a directory")
    wanted = {e["object"] for e in entries if e["type"] == "file"}
    present = {p.name for p in objects_dir.iterdir()}
    if present != wanted:
        raise ReferenceError(f"object set differs: {sorted(present ^ wanted)}")
    # 4-5. Lengths, segments, digests.
    tree: dict[str, DecodedEntry] = {}
    for entry in entries:
        if entry["type"] == "dir":
            tree[entry["path"]] = DecodedEntry("dir", entry["mode"], b"")
            continue
        obj_path = objects_dir / entry["object"]
        if obj_path.is_symlink() or not obj_path.is_file():
            raise ReferenceError(f"object {entry['object']} is not a regular file")
        content, digest = open_object(
            obj_path.read_bytes(), key, bytes.fromhex(entry["object"]), prefix, entry["size"]
        )
        if not hmac.compare_digest(digest, entry["digest"]):
            raise ReferenceError(f"object {entry['object']}: digest mismatch")
        tree[entry["path"]] = DecodedEntry("file", entry["mode"], content)
    return tag, tree
