"""Problems (RFC 9457) and the one table from exception class to HTTP answer.

A route raises what its core raises; :class:`ProblemTable` turns it into a status and a
title, matched by class with the most specific first (the exception's MRO), as httpx
keeps one map from transport errors to its own. A new refusal is added in one place,
and two routes cannot answer one refusal differently. Nothing about a failure that is
not in the table leaves the server: it is a 500 with a fixed detail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from confide.db.availability import UNAVAILABLE_DETAIL, cause, unavailability
from confide.errors import AuthError, ConfideError


class HttpProblemError(Exception):
    """A refusal that already knows its answer (a route's own wording); ``extra`` members
    join the problem's body (RFC 9457 extension members)."""

    def __init__(
        self, status: int, title: str, detail: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.extra = dict(extra or {})


def problem(
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


@dataclass(frozen=True)
class Answer:
    """How one class of exception is answered. The detail is the exception's message
    after ``prefix``, or ``detail`` when the message may carry what must not leave the
    server (a driver's message names statements and values); ``fields`` are attributes
    of the exception that join the body when they are set."""

    status: int
    title: str
    prefix: str = ""
    detail: str | None = None
    fields: tuple[str, ...] = ()

    def problem(self, exc: BaseException) -> HttpProblemError:
        detail = self.detail if self.detail is not None else f"{self.prefix}{exc}"
        extra = {name: getattr(exc, name, None) for name in self.fields}
        extra = {name: value for name, value in extra.items() if value is not None}
        return HttpProblemError(self.status, self.title, detail, extra)


BAD_REQUEST = Answer(400, "Bad Request")
FORBIDDEN = Answer(403, "Forbidden")
NOT_FOUND = Answer(404, "Not Found")
CONFLICT = Answer(409, "Conflict")


class ProblemTable:
    """Exception classes and their answers; :meth:`answer` walks the MRO."""

    def __init__(self, entries: Mapping[type[BaseException], Answer]) -> None:
        self.entries: dict[type[BaseException], Answer] = dict(entries)

    def extended(self, entries: Mapping[type[BaseException], Answer]) -> ProblemTable:
        """This table with a service's own classes added (or answered differently)."""
        return ProblemTable({**self.entries, **entries})

    def answer(self, exc: BaseException) -> HttpProblemError | None:
        """The problem ``exc`` is answered with; None when no class of it is listed."""
        if isinstance(exc, HttpProblemError):
            return exc
        for kind in type(exc).__mro__:
            found = self.entries.get(kind)
            if found is not None:
                return found.problem(exc)
        return None


# Every service's refusals: a bad signature or a replay, a deliberate refusal of the core
# (ConfideError: the core's messages name the reason and never a value), and a UNIQUE
# constraint lost to a concurrent write (whose message carries SQL: not sent).
BASE_TABLE = ProblemTable(
    {
        AuthError: Answer(401, "Unauthorized"),
        ConfideError: BAD_REQUEST,
        IntegrityError: Answer(409, "Conflict", detail="written concurrently: retry"),
    }
)


RETRY_AFTER_SECONDS = 1  # what a 503 (database unavailable) tells clients to wait
# What a 503 says, by what :func:`confide.db.availability.unavailability` found.
UNAVAILABLE_DETAILS = {"full": "the database's disk is full: retry once space is freed"}


def exception_handlers(table: ProblemTable, service: str, log: logging.Logger) -> dict[Any, Any]:
    """Starlette's exception handlers for the app of ``service`` (its name, as a 500 says
    it) whose refusals ``table`` answers."""

    async def on_refusal(request: Request, exc: Exception) -> Response:
        found = table.answer(exc)
        if found is None:  # registered for the table's classes only
            return await on_error(request, exc)
        return problem(found.status, found.title, found.detail, extra=found.extra)

    async def on_http(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "error"
        return problem(status, str(detail), f"{request.method} {request.url.path}: {detail}")

    async def on_database(request: Request, exc: Exception) -> Response:
        """A locked, timed-out, unreachable or full database is 503 with Retry-After:
        nothing was written (one transaction per write) and the same request, re-signed,
        may succeed."""
        what = unavailability(exc)
        if what is None:
            raise exc  # not availability: the 500 path (on_error), with the traceback logged
        log.warning(
            "database %s (%s) on %s %r: answered 503",  # %r: a path holds no control byte
            what,
            cause(exc),
            request.method,
            request.url.path[:200],
        )
        detail = UNAVAILABLE_DETAILS.get(what, UNAVAILABLE_DETAIL)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return problem(503, "Service Unavailable", detail, headers)

    async def on_error(request: Request, exc: Exception) -> Response:
        # Nothing about the failure leaves the server: it could carry data.
        return problem(500, "Internal Server Error", f"the {service} failed; see its log")

    handlers: dict[Any, Any] = dict.fromkeys(table.entries, on_refusal)
    handlers.update(
        {
            HttpProblemError: on_refusal,
            HTTPException: on_http,
            DBAPIError: on_database,
            PoolTimeoutError: on_database,
            Exception: on_error,
        }
    )
    return handlers
