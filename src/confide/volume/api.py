"""Encrypt a directory tree into a volume, and verify or decrypt it back."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from confide.crypto import SymmetricKey, segment_cipher
from confide.errors import IntegrityError, VolumeError
from confide.volume import engine, tree
from confide.volume.format import (
    FORMAT_VERSION,
    HEADER_BYTES,
    ID_BYTES,
    MANIFEST_NONCE,
    OBJECTS_DIR,
    SEGMENT_SIZE,
    SUITE_AES256GCM_HKDF_SHA256,
    TAG_BYTES,
    VOLUME_FILE,
    Header,
    VolumeKeys,
    compute_tag,
    object_digest,
    parse_header,
    segment_count,
    tags_equal,
)
from confide.volume.manifest import DirEntry, FileEntry, Manifest, parse_manifest

Progress = Callable[[int], None]
"""Called on the calling thread with the number of plaintext bytes just processed."""


@dataclass(frozen=True)
class VolumeResult:
    """What an encryption, verification or decryption processed."""

    tag: str
    files: int
    bytes: int


@dataclass(frozen=True)
class VolumeInfo:
    """What ``volume.fspf`` says without a key: nothing here is authenticated."""

    format_version: int
    segment_size: int
    volume_version_id: str
    objects: int
    stored_tag: str


def encrypt_tree(
    src: Path,
    dst: Path,
    key: SymmetricKey,
    *,
    force: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> VolumeResult:
    """Encrypt the tree ``src`` into the volume directory ``dst``; return its tag.

    ``dst`` must not exist or be empty unless ``force``; it appears only once complete.
    ``rng`` makes the volume-version id and the object ids; only known-answer tests
    pass anything but the operating system's CSPRNG.
    """
    src, dst = Path(src), Path(dst)
    tree.check_destination(dst, force)
    source = tree.walk_source(src)
    tree.check_not_nested(src, dst)
    vvid = rng(ID_BYTES)
    keys = VolumeKeys(key, vvid)
    object_ids = [rng(ID_BYTES).hex() for _ in source.files]
    staging = tree.make_staging_dir(dst)
    try:
        (staging / OBJECTS_DIR).mkdir(mode=0o700)
        objects = os.fspath(staging / OBJECTS_DIR)

        def work(piece: engine.Piece) -> engine.PieceResult:
            item = source.files[piece.file]
            object_id = object_ids[piece.file]
            cipher = segment_cipher(keys.object_key(bytes.fromhex(object_id)))
            target = f"{objects}/{object_id}"
            return engine.seal_piece(item.absolute, target, item.size, cipher, piece)

        sizes = [f.size for f in source.files]
        digests = _collect(sizes, work, workers, progress, f"cannot encrypt into {dst}")
        manifest = Manifest(
            dirs=tuple(DirEntry(path, mode) for path, mode in source.dirs),
            files=tuple(
                FileEntry(f.path, f.mode, f.size, object_ids[i], digests[i])
                for i, f in enumerate(source.files)
            ),
        )
        tag = _write_volume_file(staging, keys, vvid, manifest)
        tree.publish(staging, dst)
    except BaseException:
        tree.discard(staging)
        raise
    return VolumeResult(tag.hex(), len(source.files), source.total_bytes)


def _collect(
    sizes: list[int],
    work: Callable[[engine.Piece], engine.PieceResult],
    workers: int | None,
    progress: Progress | None,
    failure: str,
) -> list[str]:
    """Run ``work`` over every segment of files of ``sizes``; return each object digest."""
    digests = [""] * len(sizes)
    split: dict[int, list[bytes]] = {}

    def done(piece: engine.Piece, result: engine.PieceResult) -> None:
        if isinstance(result, str):
            digests[piece.file] = result
        else:
            hashes = split.setdefault(piece.file, [b""] * segment_count(sizes[piece.file]))
            hashes[piece.first : piece.stop] = result
        if progress is not None:
            end = min(sizes[piece.file], piece.stop * SEGMENT_SIZE)
            progress(end - piece.first * SEGMENT_SIZE)

    try:
        engine.run_batches(
            engine.plan_batches(sizes), work, workers or engine.default_workers(), done
        )
    except OSError as exc:
        raise VolumeError(f"{failure}: {exc.strerror or exc}") from None
    for index, hashes in split.items():
        digests[index] = object_digest(hashes)
    return digests


def _write_volume_file(staging: Path, keys: VolumeKeys, vvid: bytes, manifest: Manifest) -> bytes:
    plaintext = manifest.to_json()
    header = Header(
        FORMAT_VERSION,
        SUITE_AES256GCM_HKDF_SHA256,
        SEGMENT_SIZE,
        vvid,
        len(plaintext) + 16,
    ).pack()
    ciphertext = AESGCM(keys.manifest_key).encrypt(MANIFEST_NONCE, plaintext, header)
    tag = compute_tag(keys, header, ciphertext)
    try:
        (staging / VOLUME_FILE).write_bytes(header + ciphertext + tag)
    except OSError as exc:
        raise VolumeError(f"cannot write {VOLUME_FILE}: {exc.strerror}") from None
    return tag


def _open_volume(
    src: Path, key: SymmetricKey, expected_tag: str | None
) -> tuple[VolumeKeys, Manifest, str]:
    """Authenticate ``volume.fspf`` and return the keys, the manifest and the tag."""
    name = str(src)
    blob = _read_volume_file(src)
    header = parse_header(blob, name)
    header_bytes = blob[:HEADER_BYTES]
    ciphertext = blob[HEADER_BYTES:-TAG_BYTES]
    stored = blob[-TAG_BYTES:]
    keys = VolumeKeys(key, header.volume_version_id)
    tag = compute_tag(keys, header_bytes, ciphertext)
    if expected_tag is not None and not tags_equal(tag, _parse_tag(expected_tag)):
        if tags_equal(tag, stored):
            raise IntegrityError(
                f"volume {name}: tag {tag.hex()} is not the expected {expected_tag.lower()}: "
                f"this is another version of the volume (rolled back or replaced)"
            )
        raise IntegrityError(
            f"volume {name}: header or manifest failed authentication "
            f"(wrong key, or the volume was tampered with)"
        )
    if not tags_equal(tag, stored):
        raise IntegrityError(
            f"volume {name}: header or manifest failed authentication "
            f"(wrong key, or the volume was tampered with)"
        )
    try:
        plaintext = AESGCM(keys.manifest_key).decrypt(MANIFEST_NONCE, ciphertext, header_bytes)
    except InvalidTag:
        raise IntegrityError(f"volume {name}: manifest failed authentication") from None
    return keys, parse_manifest(plaintext, name), tag.hex()


def _read_volume_file(src: Path) -> bytes:
    if not src.is_dir():
        raise VolumeError(f"volume {src} does not exist or is not a directory")
    try:
        return (src / VOLUME_FILE).read_bytes()
    except FileNotFoundError:
        raise VolumeError(f"{src} is not a confide volume (no {VOLUME_FILE})") from None
    except OSError as exc:
        raise VolumeError(f"cannot read {src / VOLUME_FILE}: {exc.strerror}") from None


def _parse_tag(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != TAG_BYTES:
        raise VolumeError("a volume tag is 64 hex characters")
    return value


def _open_objects(
    src: Path,
    keys: VolumeKeys,
    manifest: Manifest,
    target_dir: Path | None,
    *,
    workers: int | None,
    progress: Progress | None,
) -> None:
    """Authenticate every object (and decrypt it into ``target_dir`` when given)."""
    name = str(src)
    objects = src / OBJECTS_DIR
    expected = {f.object_id for f in manifest.files}
    if objects.is_dir():
        present = set(os.listdir(objects))
    elif expected:
        raise IntegrityError(f"volume {name}: the {OBJECTS_DIR} directory is missing")
    else:
        present = set()
    extras = sorted(present - expected)
    if extras:
        raise IntegrityError(
            f"volume {name}: unexpected object {extras[0]!r} (added to the volume)"
        )
    object_dir = os.fspath(objects)
    target_root = None if target_dir is None else os.fspath(target_dir)

    def work(piece: engine.Piece) -> engine.PieceResult:
        item = manifest.files[piece.file]
        cipher = segment_cipher(keys.object_key(bytes.fromhex(item.object_id)))
        target = None if target_root is None else f"{target_root}/{item.path}"
        try:
            return engine.open_piece(
                f"{object_dir}/{item.object_id}", target, item.size, item.mode, cipher, piece
            )
        except engine.ObjectDefectError as defect:
            raise IntegrityError(f"volume {name}: file {item.path!r} {defect}") from None

    sizes = [f.size for f in manifest.files]
    digests = _collect(sizes, work, workers, progress, f"cannot decrypt volume {name}")
    for item, digest in zip(manifest.files, digests, strict=True):
        if digest != item.digest:
            raise IntegrityError(f"volume {name}: file {item.path!r} failed authentication")


def verify_tree(
    src: Path,
    key: SymmetricKey,
    *,
    expected_tag: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> VolumeResult:
    """Check every byte of the volume ``src`` without writing anything."""
    src = Path(src)
    keys, manifest, tag = _open_volume(src, key, expected_tag)
    _open_objects(src, keys, manifest, None, workers=workers, progress=progress)
    return VolumeResult(tag, len(manifest.files), manifest.total_bytes)


def decrypt_tree(
    src: Path,
    dst: Path,
    key: SymmetricKey,
    *,
    expected_tag: str | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> VolumeResult:
    """Restore the tree of volume ``src`` into ``dst``, releasing nothing unverified.

    Everything is decrypted into a private staging directory beside ``dst`` and moved
    into place only after every segment and every object digest checked; on any failure
    the staging directory is removed and ``dst`` is untouched.
    """
    src, dst = Path(src), Path(dst)
    tree.check_destination(dst, force)
    keys, manifest, tag = _open_volume(src, key, expected_tag)
    staging = tree.make_staging_dir(dst)
    try:
        try:
            for directory in manifest.dirs:
                (staging / directory.path).mkdir(mode=0o700)
            _open_objects(src, keys, manifest, staging, workers=workers, progress=progress)
            for item in manifest.files:
                if segment_count(item.size) > engine.BATCH_SEGMENTS:  # written in pieces
                    os.chmod(staging / item.path, item.mode)
            for directory in sorted(manifest.dirs, key=lambda d: d.path, reverse=True):
                os.chmod(staging / directory.path, directory.mode)
            os.chmod(staging, 0o755 & ~_umask())
        except OSError as exc:
            raise VolumeError(f"cannot write {dst}: {exc.strerror or exc}") from None
        tree.publish(staging, dst)
    except BaseException:
        tree.discard(staging)
        raise
    return VolumeResult(tag, len(manifest.files), manifest.total_bytes)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_manifest(src: Path, key: SymmetricKey) -> Manifest:
    """The authenticated manifest of volume ``src`` (paths, modes, sizes, objects)."""
    return _open_volume(Path(src), key, None)[1]


def read_volume_info(src: Path) -> VolumeInfo:
    """Describe a volume without its key. The stored tag is *unverified*."""
    src = Path(src)
    blob = _read_volume_file(src)
    header = parse_header(blob, str(src))
    objects = src / OBJECTS_DIR
    count = len(os.listdir(objects)) if objects.is_dir() else 0
    return VolumeInfo(
        header.version,
        header.segment_size,
        header.volume_version_id.hex(),
        count,
        blob[-TAG_BYTES:].hex(),
    )
