"""The database: SQLAlchemy 2 Core over SQLite (WAL) by default, PostgreSQL at scale.

Schema changes are Alembic migrations, applied at start (:func:`upgrade`). Every service
is stateless over its database, so replicas share one and a restart loses nothing that
was committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confide.db.engine import connect_url, make_engine, reading, upgrade
    from confide.db.replay import prune_request_nonces, record_request

__all__ = [
    "connect_url",
    "make_engine",
    "prune_request_nonces",
    "reading",
    "record_request",
    "upgrade",
]


def __getattr__(name: str) -> Any:
    """The exports load on first use: replay needs the request-signing code, a second to
    import, which ``confide audit`` (reading ``confide.db.audit``) never uses."""
    if name in ("connect_url", "make_engine", "reading", "upgrade"):
        from confide.db import engine  # noqa: PLC0415

        return getattr(engine, name)
    if name in ("prune_request_nonces", "record_request"):
        from confide.db import replay  # noqa: PLC0415

        return getattr(replay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
