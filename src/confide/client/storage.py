"""A client for the storage: content-addressed blobs, streamed both ways (docs/storage.md).

An upload is ``PUT /v1/blobs/{sha256}`` signed over that digest (the server hashes what
streams in and keeps nothing that differs); a download is a signed ``GET`` by the blob's
uploader, or by a grantee carrying a grant, and is checked against its digest before it
is put in place. Neither holds a blob in memory: files are read and written in chunks,
and ``progress(n)`` is told each chunk's size (a progress bar).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confide.client.base import ServiceClient
from confide.errors import ConfideError
from confide.grants import GRANT_HEADER

CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")
Progress = Callable[[int], None]


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


class StorageClient(ServiceClient):
    service = "storage"

    def upload(
        self, path: Path, *, digest: str | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Upload the file ``path`` as a blob: ``{"digest", "size"}`` (idempotent)."""
        digest = digest or sha256_of(path)
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk

        response = self._signed(
            "PUT",
            f"/v1/blobs/{_digest(digest)}",
            "",
            chunks,
            "application/octet-stream",
            body_sha256=digest,
            headers={"content-length": str(size)},
        )
        result: dict[str, Any] = response.json()
        if result.get("digest") != digest:
            raise ConfideError(f"the storage acknowledged another blob than {digest}")
        return result

    def download(
        self,
        digest: str,
        destination: Path,
        *,
        grant: str | None = None,
        progress: Progress | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Fetch blob ``digest`` into ``destination`` (complete and checked, or not at
        all); returns its size. ``max_bytes``: a larger blob is refused as it arrives
        (a storage or hub that names a huge blob fills no disk)."""
        headers = {GRANT_HEADER: grant} if grant else {}
        response = self._signed(
            "GET", f"/v1/blobs/{_digest(digest)}", "", b"", "", headers=headers, stream=True
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{os.urandom(4).hex()}.part")
        hashed, size = hashlib.sha256(), 0
        try:
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ConfideError(
                            f"blob {digest} is larger than the {max_bytes} bytes expected: "
                            f"nothing kept"
                        )
                    hashed.update(chunk)
                    handle.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            if hashed.hexdigest() != digest:
                raise ConfideError(
                    f"the storage sent bytes that are not blob {digest}: nothing kept"
                )
            partial.replace(destination)
        finally:
            response.close()
            partial.unlink(missing_ok=True)
        return size


def _digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise ConfideError(f"{digest!r} is not a blob digest (64 lower-case hex)")
    return digest
