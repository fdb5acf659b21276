"""The stored result zip, encrypted to the requester, and the sealed logs.

An encrypted result is a zip of two stored (uncompressed) entries:

- ``sealed-key``: a fresh 32-byte data key, HPKE-sealed (confide.crypto.sealing's suite:
  DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) to the requester's result key with
  ``info = lp("confide-result-v1") || lp(task id) || lp("data-key")``;
- ``result.enc``: ``"confide-result-enc-v1\\n" || u32(segment size)`` then the inner zip in
  segments, each AES-256-GCM under ``HKDF(data key, lp("confide-result-v1") || task id ||
  "segment")`` with the STREAM nonce of confide.crypto.segment (counter + last flag), so
  truncating, reordering or extending the ciphertext fails.

Logs are one HPKE message to the same key, ``info = lp("confide-result-v1") || lp(task id)
|| lp("logs")``: neither ciphertext opens as the other, nor for another task.
A result without encryption (``--no-encrypt-result``) is the inner zip itself.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from confide.crypto.encoding import lp
from confide.crypto.kdf import derive_subkey
from confide.crypto.result_key import check_public_key
from confide.crypto.sealing import open_with, seal_to  # the one HPKE suite confide uses
from confide.crypto.segment import SegmentAuthenticationError, segment_cipher
from confide.errors import KeyFileError
from confide.results.archive import ZIP_ERRORS, write_inner_zip
from confide.results.digest import ResultError

RESULT_LABEL = b"confide-result-v1"
SEALED_KEY = "sealed-key"
ENCRYPTED = "result.enc"
_MAGIC = b"confide-result-enc-v1\n"
SEGMENT_BYTES = 1 << 20
_TAG = 16
_HPKE_OVERHEAD = 32 + 16  # enc + tag
_EPOCH = (1980, 1, 1, 0, 0, 0)
MAX_LOGS = 1 << 20


def check_task_id(task_id: str) -> str:
    text = task_id.lower()
    if (
        len(text) != 66
        or not text.startswith("0x")
        or not all(c in "0123456789abcdef" for c in text[2:])
    ):
        raise ResultError(f"{task_id!r} is not a task id (0x and 64 hex)")
    return text


def _info(task_id: str, purpose: bytes) -> bytes:
    return lp(RESULT_LABEL) + lp(check_task_id(task_id).encode()) + lp(purpose)


def _seal(plaintext: bytes, public: bytes, info: bytes) -> bytes:
    try:
        return seal_to(plaintext, check_public_key(public), info)
    except (KeyFileError, ValueError) as exc:
        raise ResultError(f"the result key cannot be sealed to: {exc}") from None


def _open(sealed: bytes, private: X25519PrivateKey, info: bytes, what: str) -> bytes:
    try:
        return open_with(sealed, private, info)
    except ValueError:
        raise ResultError(
            f"the {what} does not open with this result key: sealed to another key, for "
            f"another task, or altered"
        ) from None


def load_private_key(path: Path) -> X25519PrivateKey:
    """The requester's X25519 result key from its PKCS#8 PEM file (never echoed)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultError(
            f"no result key at {path} (the requester's key, made by `confide result "
            f"generate-encryption-keypair`)"
        ) from None
    except OSError as exc:
        raise ResultError(f"cannot read the result key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, X25519PrivateKey):
        raise ResultError(f"{path} holds no X25519 private key (a result key)")
    return key


def public_of(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _segment_key(data_key: bytes, task_id: str) -> bytes:
    return derive_subkey(data_key, b"", RESULT_LABEL, check_task_id(task_id).encode(), b"segment")


def _stored(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(SEGMENT_BYTES):
            digest.update(block)
    return digest.hexdigest()


def build_result(
    out_dir: Path, dest: Path, *, task_id: str, salt: bytes, result_public_key: bytes | None
) -> str:
    """Write the stored zip of ``out_dir`` (with the salt) at ``dest``: sealed to
    ``result_public_key``, or the plain inner zip when it is None. Returns its SHA-256
    (the ciphertext digest the statement names)."""
    check_task_id(task_id)
    if result_public_key is None:
        write_inner_zip(out_dir, dest, salt)
        return sha256_path(dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".result-") as work:
        inner = Path(work, "inner.zip")
        write_inner_zip(out_dir, inner, salt)
        data_key = os.urandom(32)
        sealed_key = _seal(data_key, result_public_key, _info(task_id, b"data-key"))
        cipher = segment_cipher(_segment_key(data_key, task_id))
        size = inner.stat().st_size
        with zipfile.ZipFile(dest, "w", allowZip64=True) as archive:
            archive.writestr(_stored(SEALED_KEY), sealed_key)
            with (
                inner.open("rb") as source,
                archive.open(_stored(ENCRYPTED), "w", force_zip64=True) as target,
            ):
                target.write(_MAGIC + struct.pack(">I", SEGMENT_BYTES))
                index, done = 0, 0
                while True:
                    block = source.read(SEGMENT_BYTES)
                    done += len(block)
                    last = done >= size
                    target.write(cipher.seal(index, last, block))
                    index += 1
                    if last:
                        break
    return sha256_path(dest)


def is_encrypted(stored: Path) -> bool:
    """Whether the stored zip is the encrypted form (exactly sealed-key + result.enc)."""
    try:
        with zipfile.ZipFile(stored) as archive:
            return sorted(archive.namelist()) == [ENCRYPTED, SEALED_KEY]
    except ZIP_ERRORS as exc:
        raise ResultError(f"the stored result is not a readable zip ({exc})") from None


def decrypt_result(
    stored: Path, inner: Path, *, task_id: str, private_key: X25519PrivateKey
) -> None:
    """Decrypt the encrypted stored zip into the inner zip at ``inner``; every segment is
    authenticated before the file is complete (a failure removes it)."""
    try:
        with zipfile.ZipFile(stored) as archive:
            key_info = archive.getinfo(SEALED_KEY)
            if key_info.file_size > 32 + _HPKE_OVERHEAD:
                raise ResultError("the result's sealed key is too long")
            sealed_key = archive.read(key_info)
            data_key = _open(sealed_key, private_key, _info(task_id, b"data-key"), "result")
            cipher = segment_cipher(_segment_key(data_key, task_id))
            body = archive.getinfo(ENCRYPTED).file_size - len(_MAGIC) - 4
            with archive.open(ENCRYPTED) as source, inner.open("wb") as target:
                header = source.read(len(_MAGIC) + 4)
                if header[: len(_MAGIC)] != _MAGIC or len(header) != len(_MAGIC) + 4:
                    raise ResultError("result.enc is not a confide encrypted result")
                (segment,) = struct.unpack(">I", header[len(_MAGIC) :])
                if not 0 < segment <= 16 * SEGMENT_BYTES or body < _TAG:
                    raise ResultError("result.enc has a malformed header")
                index, left = 0, body
                while left > 0:
                    chunk = source.read(min(segment + _TAG, left))
                    left -= len(chunk)
                    if not chunk:
                        raise ResultError("result.enc is truncated")
                    target.write(cipher.open(index, left == 0, chunk))
                    index += 1
    except SegmentAuthenticationError:
        inner.unlink(missing_ok=True)
        raise ResultError(
            "the encrypted result does not authenticate: altered, truncated or not this task's"
        ) from None
    except ZIP_ERRORS as exc:
        inner.unlink(missing_ok=True)
        raise ResultError(f"the stored result is not a readable encrypted result ({exc})") from None
    except ResultError:
        inner.unlink(missing_ok=True)
        raise


def seal_logs(text: bytes, result_public_key: bytes, task_id: str) -> bytes:
    """The task's logs sealed to the requester's result key (bound to the task)."""
    if len(text) > MAX_LOGS:
        raise ResultError(f"logs are at most {MAX_LOGS} bytes (keep the tail)")
    return _seal(text, result_public_key, _info(task_id, b"logs"))


def open_logs(sealed: bytes, result_private_key_path: Path, task_id: str) -> bytes:
    """The logs, opened with the requester's key file; ResultError if they do not open."""
    key = load_private_key(result_private_key_path)
    return _open(sealed, key, _info(task_id, b"logs"), "logs")
