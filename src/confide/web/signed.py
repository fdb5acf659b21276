"""A signed request as a route handles it: verified against the raw path, then its nonce
used up exactly once, whether the request succeeds or is refused.

The path signed is the one received, percent-escapes and all (the ASGI scope's
``raw_path``, without the query): a name holding ``%3F`` or ``%2F`` is routed by its
decoded form, which is another path. No confide name needs an escape, so a signed
request whose path holds one is refused (400) rather than signed as one path and routed
as another.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, Engine
from starlette.requests import Request

from confide.crypto.requests import SignedBy, canonical_query, verify_request
from confide.db.replay import record_request
from confide.errors import AuthError
from confide.web.problems import HttpProblemError

_PRINTABLE = re.compile(rb"[\x21-\x7e]*")  # printable ASCII, no space


def raw_path(request: Request) -> str:
    """The path as the client sent it (no query); 400 when it holds a percent-escape or a
    byte beyond printable ASCII (which no route's names allow)."""
    raw = request.scope.get("raw_path")
    path: bytes = raw if isinstance(raw, bytes) else request.url.path.encode()
    path = path.split(b"?", 1)[0]
    if b"%" in path or not _PRINTABLE.fullmatch(path):
        shown = path.decode("ascii", "backslashreplace")[:200]
        raise HttpProblemError(
            400,
            "Bad Request",
            f"the path {shown!r} holds a percent-escape or a byte beyond printable ASCII: "
            f"names are 1 to 64 of A-Z a-z 0-9 _ -",
        )
    return path.decode("ascii")


def authenticate(
    request: Request, body: bytes, audience: str, now: int, *, body_sha256: str | None = None
) -> SignedBy:
    """The verified signer of ``request`` (401 saying which check failed); its nonce is not
    recorded yet. ``body_sha256``: a streamed body's claimed digest, checked by the caller
    against the bytes as they arrive (``body`` is then empty)."""
    path = raw_path(request)
    try:
        return verify_request(
            request.headers,
            audience=audience,
            method=request.method,
            path=path,
            query=canonical_query(request.query_params.multi_items()),
            content_type=request.headers.get("content-type", ""),
            body=body,
            now=now,
            body_sha256=body_sha256,
        )
    except AuthError as exc:
        raise HttpProblemError(401, "Unauthorized", str(exc)) from None


class Signed:
    """A verified request inside ``Handlers.signed_request``: who signed it, and whether
    its nonce is used up yet (the construct uses it up on a refusal when it is not).

    A route records the nonce with :meth:`record` (a transaction of its own: reads, and
    writes whose effect has its own guards) or :meth:`record_in` (in the transaction of
    the request's effect, so both commit or neither does).
    """

    def __init__(self, by: SignedBy, engine: Engine, now: int) -> None:
        self.by = by
        self.address = by.address
        self.engine = engine
        self.now = now
        self.used = False  # recorded by a transaction that committed, or found recorded
        self.pending = False  # recorded in the effect's transaction, which may roll back

    def record(self) -> None:
        """Use the nonce up now, in a transaction of its own; 401 on a replay."""
        try:
            with self.engine.begin() as connection:
                record_request(connection, self.by, self.now)
        finally:
            self.used = True  # by this request, or by an earlier one (a replay)

    def record_in(self, connection: Connection) -> None:
        """Record the nonce in the caller's transaction (AuthError, a 401, on a replay).
        Should that transaction roll back, the construct uses the nonce up afterwards."""
        try:
            record_request(connection, self.by, self.now)
        except AuthError:
            self.used = True
            raise
        self.pending = True

    def burn(self) -> None:
        """After a refusal: use the nonce up in a transaction of its own, so the request
        cannot be replayed later, when it might no longer be refused.

        Found used already, the nonce was either recorded by this request's own effect
        (which committed before the failure: nothing to do) or by an earlier request:
        then this one is a replay, and that is its answer (AuthError, 401), whatever it
        would otherwise have been refused for.
        """
        if self.used:
            return
        try:
            with self.engine.begin() as connection:
                record_request(connection, self.by, self.now)
        except AuthError:
            if not self.pending:
                raise
        finally:
            self.used = True
