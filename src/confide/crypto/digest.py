"""Content digests: what commits a volume's tag to every byte of its ciphertext.

BLAKE3, for speed where it matters: the digest covers every byte a volume holds, and at
3.9 GB/s per core here BLAKE3 costs a third of SHA-256 (1.5 GB/s with SHA-NI), which
alone decided whether encryption keeps pace with ``cp -r``. It is a collision-resistant
256-bit hash (BLAKE2's compression function with fewer rounds, a Merkle tree mode);
content addressing of stored blobs stays SHA-256 (``storage``), where interoperability
with other tools matters more than speed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from blake3 import blake3

from confide.crypto.encoding import lp

DIGEST_BYTES = 32


def chunk_digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of one chunk (a sealed segment)."""
    return blake3(data).digest()


def list_digest(label: bytes, leaves: Sequence[bytes]) -> bytes:
    """BLAKE3-256 of ``lp(label) || u64(len(leaves)) || leaves...``: a digest of digests."""
    hasher = blake3(lp(label))
    hasher.update(struct.pack(">Q", len(leaves)))
    for leaf in leaves:
        hasher.update(leaf)
    return hasher.digest()


def sha256_hex(data: bytes) -> str:
    """SHA-256, for identities other tools must recompute (measurements, blob addresses)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
