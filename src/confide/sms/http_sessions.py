"""HTTP routes for sessions: create, read, update and history (thin over
:class:`confide.sms.sessions.SessionStore`).

A session document is parsed on a parsing thread of its own, never on a database thread
(on SQLite the only one, which every other wallet's request needs) nor on the event
loop; the parser bounds its own time and size (confide.sms.session_document). A write's
replay record commits in the write's transaction; a refusal uses its nonce up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.db.engine import reading
from confide.errors import SessionError
from confide.sms.attest import current_tags
from confide.sms.http_common import SmsHandlers
from confide.sms.session_document import SessionDocument, parse_session
from confide.sms.sessions import StoredSession
from confide.web.bodies import json_object, path_address, read_body
from confide.web.problems import HttpProblemError
from confide.web.signed import Signed

SESSION_BODY_LIMIT = 256 * 1024


class SessionHandlers:
    def __init__(self, base: SmsHandlers) -> None:
        self.base = base
        self.sms = base.sms

    def routes(self) -> list[Route]:
        return [
            Route("/v1/sessions", self.create_session, methods=["POST"]),
            Route("/v1/sessions/{owner}/{name}", self.session_resource, methods=["GET", "PUT"]),
            Route("/v1/sessions/{owner}/{name}/history", self.session_history, methods=["GET"]),
        ]

    async def create_session(self, request: Request) -> Response:
        raw = await read_body(request, SESSION_BODY_LIMIT)
        async with self.base.signed_request_async(request, raw) as signed:
            document = await self.base.parse(_session_from, raw)
            stored = await self.base.blocking(self._create, signed, document)
        return JSONResponse(stored, status_code=201)

    def _create(self, signed: Signed, document: SessionDocument) -> dict[str, Any]:
        stored = self.sms.sessions.create(
            signed.address, document, self.base.now(), signed.record_in
        )
        return session_json(stored, self.tags(stored))

    async def session_resource(self, request: Request) -> Response:
        owner = path_address(request.path_params["owner"])
        name = request.path_params["name"]
        if request.method != "PUT":  # GET, or the HEAD Starlette adds to it: a read
            return await self.base.blocking(self._read, request, owner, name)
        raw = await read_body(request, SESSION_BODY_LIMIT)
        async with self.base.signed_request_async(request, raw) as signed:
            document = await self.base.parse(_session_from, raw)
            if document.name != name:
                raise HttpProblemError(400, "Bad Request", f"the document names {document.name!r}")
            stored = await self.base.blocking(self._update, signed, owner, document)
        return JSONResponse(stored)

    def _read(self, request: Request, owner: str, name: str) -> Response:
        with self.base.signed_request(request, b"") as signed:
            signed.record()
            stored = self.sms.sessions.current(signed.address, owner, name)
            return JSONResponse(session_json(stored, self.tags(stored)))

    def _update(self, signed: Signed, owner: str, document: SessionDocument) -> dict[str, Any]:
        stored = self.sms.sessions.update(
            signed.address, owner, document, self.base.now(), signed.record_in
        )
        return session_json(stored, self.tags(stored))

    async def session_history(self, request: Request) -> Response:
        owner = path_address(request.path_params["owner"])
        return await self.base.blocking(self._history, request, owner)

    def _history(self, request: Request, owner: str) -> Response:
        name = request.path_params["name"]
        with self.base.signed_request(request, b"") as signed:
            signed.record()
            versions = self.sms.sessions.history(signed.address, owner, name)
        history = [
            {"hash": v.hash, "predecessor": v.predecessor, "created_at": v.created_at}
            for v in versions
        ]
        return JSONResponse({"owner": owner, "name": name, "history": history})

    def tags(self, stored: StoredSession) -> dict[str, str | None]:
        """Each volume's current tag (None before its first), on one connection."""
        with reading(self.sms.engine) as connection:
            names = [v["name"] for v in stored.document["volumes"]]
            return current_tags(stored.owner, stored.name, names, connection)


def _session_from(raw: bytes) -> SessionDocument:
    """A session document from a request body: the JSON and the YAML both parsed on the
    parsing thread, never on the event loop."""
    return parsed_session(json_object(raw, 4))


def parsed_session(body: dict[str, Any]) -> SessionDocument:
    """The session a request body carries (``{"yaml", "vars", "source"}``); a refusal
    names its reason (the parser's errors give the line)."""
    text, variables = body.get("yaml"), body.get("vars", {})
    if (
        not isinstance(text, str)
        or not isinstance(variables, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())
    ):
        raise HttpProblemError(400, "Bad Request", 'expected {"yaml": "...", "vars": {...}}')
    try:
        return parse_session(text, variables, str(body.get("source") or "session"))
    except RecursionError:  # the parser bounds nesting; should one slip past, still a 400
        raise SessionError("the session document nests too deeply") from None


def session_json(stored: StoredSession, tags: Mapping[str, str | None]) -> dict[str, Any]:
    """A session as clients see it: never a secret value (the document holds none)."""
    document = stored.document
    return {
        "name": stored.name,
        "owner": stored.owner,
        "hash": stored.hash,
        "predecessor": stored.predecessor,
        "version": document["version"],
        "services": document["services"],
        "volumes": [{**volume, "tag": tags.get(volume["name"])} for volume in document["volumes"]],
        "secrets": document["secrets"],
        "access_policy": document["access_policy"],
        "security": document["security"],
        "created_at": stored.created_at,
    }
