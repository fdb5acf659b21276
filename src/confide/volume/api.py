"""Encrypt a directory tree into a volume, and verify or decrypt it back."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confide.crypto import (
    SegmentAuthenticationError,
    SymmetricKey,
    open_manifest,
    seal_manifest,
    segment_cipher,
)
from confide.errors import VolumeError, VolumeIntegrityError
from confide.volume import engine, tree
from confide.volume.format import (
    FORMAT_VERSION,
    HEADER_BYTES,
    ID_BYTES,
    MAX_MANIFEST_BYTES,
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
    sealed_size,
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
    with tree.staging_dir(dst) as staging:
        (staging / OBJECTS_DIR).mkdir(mode=0o700)
        objects = os.fspath(staging / OBJECTS_DIR)

        def work(piece: engine.Piece) -> engine.PieceResult:
            item = source.files[piece.file]
            object_id = object_ids[piece.file]
            cipher = segment_cipher(keys.object_key(bytes.fromhex(object_id)))
            target = f"{objects}/{object_id}"
            return engine.seal_piece(item.absolute, target, item.size, cipher, piece)

        sizes = [f.size for f in source.files]
        engine.precreate_split_files([f"{objects}/{oid}" for oid in object_ids], sizes)
        digests = _collect(sizes, work, workers, progress, f"cannot encrypt into {dst}")
        manifest = Manifest(
            dirs=tuple(DirEntry(path, mode) for path, mode in source.dirs),
            files=tuple(
                FileEntry(f.path, f.mode, f.size, object_ids[i], digests[i])
                for i, f in enumerate(source.files)
            ),
        )
        tag = _write_volume_file(staging, keys, vvid, manifest)
        tree.publish(staging, dst, force)
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
    ciphertext = seal_manifest(keys.manifest_key, plaintext, header)
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
            raise VolumeIntegrityError(
                f"volume {name}: tag {tag.hex()} is not the expected {expected_tag.lower()}: "
                f"this is another version of the volume (rolled back or replaced)"
            )
        raise VolumeIntegrityError(
            f"volume {name}: header or manifest failed authentication "
            f"(wrong key, or the volume was tampered with)"
        )
    if not tags_equal(tag, stored):
        raise VolumeIntegrityError(
            f"volume {name}: header or manifest failed authentication "
            f"(wrong key, or the volume was tampered with)"
        )
    try:
        plaintext = open_manifest(keys.manifest_key, ciphertext, header_bytes)
    except SegmentAuthenticationError:
        raise VolumeIntegrityError(f"volume {name}: manifest failed authentication") from None
    return keys, parse_manifest(plaintext, name), tag.hex()


def _read_volume_file(src: Path) -> bytes:
    """Read ``volume.fspf``: a regular file (no link, FIFO or device) of bounded size."""
    if not src.is_dir():
        raise VolumeError(f"volume {src} does not exist or is not a directory")
    path = src / VOLUME_FILE
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise VolumeError(f"{src} is not a confide volume (no {VOLUME_FILE})") from None
    except OSError as exc:
        raise VolumeIntegrityError(
            f"volume {src}: {VOLUME_FILE} cannot be opened: {exc.strerror}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise VolumeIntegrityError(f"volume {src}: {VOLUME_FILE} is not a regular file")
        if info.st_size > HEADER_BYTES + MAX_MANIFEST_BYTES + TAG_BYTES:
            raise VolumeIntegrityError(f"volume {src}: {VOLUME_FILE} is larger than any valid one")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(info.st_size + 1)
    except OSError as exc:
        raise VolumeError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


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
    _check_objects(name, objects, manifest)
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
            raise VolumeIntegrityError(f"volume {name}: file {item.path!r} {defect}") from None

    sizes = [f.size for f in manifest.files]
    if target_root is not None:
        engine.precreate_split_files([f"{target_root}/{f.path}" for f in manifest.files], sizes)
    digests = _collect(sizes, work, workers, progress, f"cannot decrypt volume {name}")
    for item, digest in zip(manifest.files, digests, strict=True):
        if digest != item.digest:
            raise VolumeIntegrityError(f"volume {name}: file {item.path!r} failed authentication")


def _check_objects(name: str, objects: Path, manifest: Manifest) -> None:
    """Spec step 4, before any work is planned: exactly the manifest's objects, each a
    regular file of the length its size implies (so no claimed size costs anything)."""
    try:
        entries = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(objects)}
    except FileNotFoundError:
        entries = {}
    except OSError as exc:
        raise VolumeError(f"cannot read {objects}: {exc.strerror}") from None
    if not entries and manifest.files and not objects.is_dir():
        raise VolumeIntegrityError(f"volume {name}: the {OBJECTS_DIR} directory is missing")
    extras = sorted(set(entries) - {f.object_id for f in manifest.files})
    if extras:
        raise VolumeIntegrityError(
            f"volume {name}: unexpected object {extras[0]!r} (added to the volume)"
        )
    for item in manifest.files:
        info = entries.get(item.object_id)
        if info is None:
            raise VolumeIntegrityError(f"volume {name}: file {item.path!r} is missing its object")
        if not stat.S_ISREG(info.st_mode):
            raise VolumeIntegrityError(
                f"volume {name}: file {item.path!r} has an object that is not a regular file"
            )
        if info.st_size != sealed_size(item.size):
            raise VolumeIntegrityError(
                f"volume {name}: file {item.path!r} failed authentication "
                f"(object truncated or extended)"
            )


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
    tree.check_not_nested(src, dst)
    keys, manifest, tag = _open_volume(src, key, expected_tag)
    with tree.staging_dir(dst) as staging:
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
        tree.publish(staging, dst, force)
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
