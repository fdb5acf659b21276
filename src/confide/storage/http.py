"""The storage over HTTP (Starlette): thin routes over :class:`confide.storage.service.Storage`.

``PUT /v1/blobs/{sha256}`` streams: its signature is checked from the headers (the body
it signs is named by the digest: ``body_sha256`` of :mod:`confide.crypto.requests`), its
size limit and the
uploader's quota from ``Content-Length``, all before a byte is read; then the body flows
in 1 MiB pieces from the event loop to a thread that hashes and writes them, a few
pieces ahead, never held whole (:mod:`confide.storage.streams`). ``GET``/``HEAD`` stream
the blob back from the backend the same way, with ``Range``. Errors are problem+json from one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from confide.crypto.requests import HEADER_ADDRESS
from confide.db.availability import unavailability
from confide.grants import GRANT_HEADER
from confide.storage.backend import (
    BackendUnavailableError,
    BlobNotFoundError,
    ByteRange,
    DigestMismatchError,
    SizeMismatchError,
    StorageFullError,
    check_digest,
)
from confide.storage.service import (
    BlobTooLargeError,
    GrantRefusedError,
    QuotaExceededError,
    ReadForbiddenError,
    Storage,
)
from confide.storage.streams import BodyPipe, read_ahead
from confide.web.handlers import Clock, Handlers
from confide.web.health import Health, database_probe
from confide.web.info import info_route
from confide.web.limits import BodyLimits, Limits, path_patterns
from confide.web.problems import (
    BASE_TABLE,
    FORBIDDEN,
    NOT_FOUND,
    Answer,
    HttpProblemError,
    exception_handlers,
)
from confide.web.signed import Signed, authenticate

_log = logging.getLogger("confide.storage")
BLOB_PATH = "/v1/blobs/{digest}"
STREAMED = path_patterns(BLOB_PATH)
IO_THREADS = 32  # uploads and backend calls at once (a slow client holds one)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

PROBLEMS = BASE_TABLE.extended(
    {
        BlobTooLargeError: Answer(413, "Payload Too Large"),
        QuotaExceededError: Answer(
            507, "Insufficient Storage", fields=("used_bytes", "quota_bytes", "size")
        ),
        StorageFullError: Answer(507, "Insufficient Storage"),
        DigestMismatchError: Answer(422, "Unprocessable Content"),
        SizeMismatchError: Answer(400, "Bad Request"),
        ReadForbiddenError: FORBIDDEN,
        GrantRefusedError: FORBIDDEN,
        BlobNotFoundError: NOT_FOUND,
        BackendUnavailableError: Answer(503, "Service Unavailable"),
    }
)


class StorageHandlers(Handlers):
    """The routes, over one :class:`Storage` and a clock."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        super().__init__(storage.engine, storage.audience, clock, "storage")
        self.storage = storage
        self.io: ThreadPoolExecutor | None = None

    async def on_io(self, work: Any, *args: Any) -> Any:
        """``work(*args)`` on the I/O threads: uploads and backend calls, which may take
        long, never on the database threads nor on the event loop."""
        if self.io is None:
            self.io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="storage-io")
        return await asyncio.get_running_loop().run_in_executor(self.io, work, *args)

    def executors(self) -> list[ThreadPoolExecutor | None]:
        taken = [*super().executors(), self.io]
        self.io = None
        return taken

    def routes(self) -> list[Route]:
        return [
            Route(BLOB_PATH, self.put_blob, methods=["PUT"]),
            Route(BLOB_PATH, self.get_blob, methods=["GET", "HEAD"]),
        ]

    async def put_blob(self, request: Request) -> Response:
        digest = check_digest(request.path_params["digest"])
        size = int(request.headers.get("content-length", "0"))
        now = self.now()
        # The signature covers sha256(body) = the digest: checked now, the body as it
        # streams in (a body that does not hash to it is refused, 422, and not kept).
        by = authenticate(request, b"", self.audience, now, body_sha256=digest)
        # The nonce is used up before the body is read, so a replayed upload costs no
        # gigabyte of reading; a refusal uses it up too (as Handlers.signed_request_async).
        signed = Signed(by, self.engine, now)
        pipe = BodyPipe(request)
        pump = asyncio.create_task(pipe.pump())
        try:
            await self.blocking(signed.record)
            stored = await self.on_io(self.storage.put, digest, size, pipe, by.address, now)
        except Exception as exc:
            if unavailability(exc) is None and not signed.used:
                await self.blocking(signed.burn)
            raise
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        body = {"digest": stored.digest, "size": stored.size}
        return JSONResponse(body, status_code=201 if stored.created else 200)

    async def get_blob(self, request: Request) -> Response:
        digest = check_digest(request.path_params["digest"])
        if HEADER_ADDRESS.lower() not in request.headers:
            raise HttpProblemError(
                401,
                "Unauthorized",
                "a blob is read with a signed request: by one of its uploaders, or by "
                f"the grantee of a grant ({GRANT_HEADER})",
            )
        grant = request.headers.get(GRANT_HEADER)

        def authorize() -> int:
            with self.signed_request(request, b"") as signed:
                signed.record()
                return self.storage.authorize_read(digest, signed.address, grant, signed.now)

        size: int = await self.blocking(authorize)
        if await self.on_io(self.storage.backend.size, digest) is None:
            raise BlobNotFoundError(f"the bytes of blob {digest} are missing: upload it again")
        headers = {
            "accept-ranges": "bytes",
            "etag": f'"{digest}"',
            "content-type": "application/octet-stream",
        }
        wanted = request.headers.get("range")
        byte_range = None if wanted is None else parse_range(wanted, size)
        status = 200
        length = size
        if byte_range is not None:
            status, length = 206, byte_range.length
            headers["content-range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
        headers["content-length"] = str(length)
        if request.method == "HEAD" or length == 0:
            return Response(b"", status_code=status, headers=headers)
        opened = await self.on_io(self.storage.backend.read, digest, byte_range)
        return StreamingResponse(
            read_ahead(self.on_io, opened), status_code=status, headers=headers
        )


def parse_range(text: str, size: int) -> ByteRange:
    """One ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` range of a ``size``-byte blob;
    416 (with the size) for anything else."""
    found = _RANGE.fullmatch(text.strip())
    first, last = (found.group(1), found.group(2)) if found else ("", "")
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        valid = start < size and (not last or int(last) >= start)
    elif last:
        start, end = max(size - int(last), 0), size - 1
        valid = int(last) > 0 and size > 0
    else:
        valid = False
    if not valid:
        raise HttpProblemError(
            416,
            "Range Not Satisfiable",
            f"the range {text[:100]!r} is not one satisfiable range of this {size}-byte "
            f"blob (bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX)",
            {"size": size},
        )
    return ByteRange(start, end)


def create_app(storage: Storage, clock: Clock, limits: Limits | None = None) -> Starlette:
    """The storage's ASGI app; ``limits``: its edge's (blob uploads stream, see
    :mod:`confide.web.limits`)."""
    health = Health(database_probe(storage.engine))
    h = StorageHandlers(storage, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        try:
            yield
        finally:
            health.close()
            await h.stop_database_threads()

    return Starlette(
        routes=[
            info_route(storage.info, storage.signing_key.sign),
            *health.routes(),
            *h.routes(),
        ],
        exception_handlers=exception_handlers(PROBLEMS, "storage", _log),
        lifespan=lifespan,
        middleware=[
            Middleware(
                BodyLimits,
                clock=clock,
                unsigned_bodies=lambda path: False,
                streamed_bodies=STREAMED,
                limits=limits,
            )
        ],
    )
