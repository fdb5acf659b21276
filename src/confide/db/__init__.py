"""The database: SQLAlchemy 2 Core over SQLite (WAL) by default, PostgreSQL at scale.

Schema changes are Alembic migrations, applied at start (:func:`upgrade`). Every service
is stateless over its database, so replicas share one and a restart loses nothing that
was committed.
"""

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
