"""The edge's one table from exception class to answer (confide.web.problems), and what a
503 says about the database (confide.db.availability)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from confide.db.availability import unavailability
from confide.errors import AuthError, ConfideError, SecretError, SessionError
from confide.sms.attest import AttestationRefusedError
from confide.sms.http_common import PROBLEMS
from confide.sms.secrets import SecretExistsError, SecretNotFoundError
from confide.sms.sessions import (
    SessionConflictError,
    SessionForbiddenError,
    SessionNotFoundError,
)
from confide.sms.volumes import TagConflictError, TagError, TagForbiddenError
from confide.web.problems import BASE_TABLE, Answer, HttpProblemError, ProblemTable


def _answer(exc: BaseException) -> tuple[int, str, str]:
    found = PROBLEMS.answer(exc)
    assert found is not None
    return found.status, found.title, found.detail


def test_each_refusal_is_answered_by_its_most_specific_class() -> None:
    assert _answer(SessionNotFoundError("n"))[0] == 404
    assert _answer(SessionForbiddenError("f"))[0] == 403
    assert _answer(SessionConflictError("c"))[0] == 409
    assert _answer(SessionError("s"))[0] == 400
    assert _answer(SecretNotFoundError("n"))[0] == 404
    assert _answer(SecretExistsError("e"))[0] == 409
    assert _answer(SecretError("s"))[0] == 400
    assert _answer(TagForbiddenError("f"))[0] == 403
    assert _answer(TagConflictError("c"))[0] == 409
    assert _answer(TagError("t"))[0] == 400
    assert _answer(AuthError("replayed"))[:2] == (401, "Unauthorized")
    assert _answer(ConfideError("x")) == (400, "Bad Request", "x")
    assert _answer(AttestationRefusedError("no")) == (403, "Forbidden", "attestation refused: no")


def test_a_subclass_no_entry_names_takes_its_nearest_ancestors_answer() -> None:
    class NewSessionRefusalError(SessionNotFoundError):
        pass

    assert _answer(NewSessionRefusalError("gone"))[0] == 404
    assert PROBLEMS.answer(ValueError("a bug")) is None  # not a refusal: a 500


def test_a_driver_message_never_leaves_and_fields_join_the_body() -> None:
    integrity = IntegrityError("INSERT INTO secrets VALUES ('value')", {}, Exception("x"))
    assert _answer(integrity) == (409, "Conflict", "written concurrently: retry")
    conflict = PROBLEMS.answer(SessionConflictError("stale", current_hash="ab" * 32))
    assert conflict is not None and conflict.extra == {"current_hash": "ab" * 32}
    assert PROBLEMS.answer(SessionConflictError("exists")).extra == {}  # type: ignore[union-attr]


def test_a_service_extends_the_base_without_changing_it() -> None:
    class GoneError(ConfideError):
        pass

    table = BASE_TABLE.extended({GoneError: Answer(410, "Gone")})
    assert _status(table, GoneError("g")) == 410
    assert _status(BASE_TABLE, GoneError("g")) == 400
    ready = HttpProblemError(418, "Teapot", "short and stout")
    assert table.answer(ready) is ready


def _status(table: ProblemTable, exc: BaseException) -> int:
    found = table.answer(exc)
    assert found is not None
    return found.status


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _operational(driver: Any) -> OperationalError:
    return OperationalError("statement", {}, driver)


def test_a_full_disk_is_told_from_an_unreachable_database() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"
    assert unavailability(_operational(full)) == "full"
    assert unavailability(_operational(_PgError("53100"))) == "full"
    assert unavailability(_operational(_PgError("53300"))) == "unreachable"  # too many conns
    cantopen = sqlite3.OperationalError("unable to open database file")
    cantopen.sqlite_errorname = "SQLITE_CANTOPEN"
    assert unavailability(_operational(cantopen)) == "unreachable"
