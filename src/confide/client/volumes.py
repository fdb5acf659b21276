"""Session volumes from a wallet: push a new version, pull the current one (the SCONE
seed's ``encryptedpush`` and ``decrypt``; docs/scone-workflow.md).

Push: the tree is encrypted with a key made here for this version only, packed and
uploaded to the storage, and only then are key, tag and blob recorded in the session
(compare-and-swap on the tag read first), so a push killed at any point leaves the
session on a version whose bytes are all stored. Pull: the sms releases the current
version's key sealed to a one-time X25519 key made here and signed with the sms key
this client pinned; the blob is downloaded with the grant that comes with it, and the
tree is decrypted only if every byte checks against that tag. Nothing is written to the
destination otherwise.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from confide.client.archive import pack
from confide.client.platform import Platform
from confide.crypto.info_proof import jwks_key
from confide.crypto.keys import SymmetricKey
from confide.crypto.volume_release import VolumeRelease, open_release
from confide.crypto.wallet import normalise_address
from confide.errors import ConfideError
from confide.sandbox.extract import extract_tar
from confide.volume.api import Progress, decrypt_tree, encrypt_tree

MAX_VOLUME_BYTES = 64 << 30  # what a pull accepts from a storage at most
MAX_VOLUME_FILES = 1_000_000


@dataclass(frozen=True)
class PushedVolume:
    owner: str
    session: str
    volume: str
    previous_tag: str | None
    tag: str
    blob: str
    files: int
    bytes: int


@dataclass(frozen=True)
class PulledVolume:
    owner: str
    session: str
    volume: str
    tag: str
    files: int
    bytes: int


def push_volume(
    platform: Platform,
    source: Path,
    *,
    owner: str,
    session: str,
    volume: str,
    keep: Path | None = None,
    progress: Progress | None = None,
) -> PushedVolume:
    """Encrypt ``source`` as the next version of ``volume`` and record it (``keep``: also
    leave the encrypted volume there, which must not exist or be empty)."""
    if not source.is_dir():
        raise ConfideError(f"{source} is not a directory")
    owner = normalise_address(owner)
    sms = platform.sms
    versions = sms.volume_tags(owner, session, volume)  # read access, and the current tag
    previous = str(versions[-1]["tag"]) if versions else None
    key = SymmetricKey.generate()  # one key per version
    with tempfile.TemporaryDirectory(prefix="confide-volume-push-") as work:
        encrypted = keep if keep is not None else Path(work) / "volume"
        result = encrypt_tree(source, encrypted, key, progress=progress)
        packed = pack(encrypted, Path(work) / "volume.tar")
        platform.storage.upload(packed.path, digest=packed.digest)
    sms.push_volume(
        owner,
        session,
        volume,
        key=key.expose(),
        previous_tag=previous,
        tag=result.tag,
        blob=packed.digest,
    )
    return PushedVolume(
        owner, session, volume, previous, result.tag, packed.digest, result.files, result.bytes
    )


def pull_volume(
    platform: Platform,
    destination: Path,
    *,
    owner: str,
    session: str,
    volume: str,
    progress: Progress | None = None,
) -> PulledVolume:
    """Decrypt the current version of ``volume`` into ``destination`` (which must not
    exist or be empty), or refuse and write nothing."""
    if destination.is_symlink() or (
        destination.exists() and (not destination.is_dir() or any(destination.iterdir()))
    ):  # said before a key is released or a byte fetched
        raise ConfideError(
            f"{destination} exists and is not an empty directory: pull into a new or empty "
            f"one (nothing was fetched)"
        )
    owner = normalise_address(owner)
    sms = platform.sms
    info = sms.info()  # the sms's key, proven and pinned: what the answer must be signed by
    reader = X25519PrivateKey.generate()
    public = reader.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    answer = sms.volume_key(owner, session, volume, public)
    tag, blob = str(answer.get("tag") or ""), str(answer.get("blob") or "")
    release = VolumeRelease(str(info["audience"]), owner, session, volume, tag, blob, public)
    try:
        sealed = bytes.fromhex(str(answer["sealed_key"]))
        signature = bytes.fromhex(str(answer["signature"]))
    except (KeyError, ValueError):
        raise ConfideError("the sms's answer holds no sealed key and signature") from None
    key = SymmetricKey(open_release(release, sealed, signature, jwks_key(info["jwks"]), reader))
    if not blob:
        raise ConfideError(
            f"volume {volume!r} of session {owner}/{session} names no stored blob (its "
            f"version {tag} was not pushed to a storage)"
        )
    with tempfile.TemporaryDirectory(prefix="confide-volume-pull-") as work:
        archive = Path(work) / "volume.tar"
        grant = answer.get("grant")
        platform.storage.download(
            blob, archive, grant=str(grant) if grant else None, max_bytes=MAX_VOLUME_BYTES
        )
        encrypted = Path(work) / "volume"
        extract_tar(archive, encrypted, max_bytes=MAX_VOLUME_BYTES, max_files=MAX_VOLUME_FILES)
        archive.unlink()
        result = decrypt_tree(encrypted, destination, key, expected_tag=tag, progress=progress)
        shutil.rmtree(encrypted, ignore_errors=True)
    return PulledVolume(owner, session, volume, result.tag, result.files, result.bytes)
