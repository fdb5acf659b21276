"""Statement shapes of the ``secrets`` table, for the secret store and the reads that join it.

Each statement is built once, with bound parameters, and run on the driver
(:mod:`confide.db.direct`): built per call, with its values inlined as literals, a
statement was built and hashed again every time, and SQLAlchemy's execution machinery was
most of a HEAD check's server time (docs/benchmarks.md, "Secret service"). A read of
several secrets is one statement per :data:`BATCH` of them, each secret's parameters
suffixed with its place in the batch (:func:`key_of`, :func:`batch_params`).

Kept apart from :mod:`confide.sms.secrets` (what a secret is and how it is stored) so
that an attestation's plan can read its secrets in the same statement as its nonce and
volume tags without the domain module building its joins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from sqlalchemy import CompoundSelect, Select, bindparam, func, insert, select, union_all

from confide.db.direct import DirectStatement
from confide.db.schema import secrets

BATCH = 32  # references per statement of a batched read (and of an attestation's recheck)

T = TypeVar("T")


class Named(Protocol):
    """What names a secret (a ``SecretRef``, or a row of ``secrets``)."""

    @property
    def owner(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def name(self) -> str: ...


def batches(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in slices of at most :data:`BATCH`, one statement's worth each."""
    return [items[start : start + BATCH] for start in range(0, len(items), BATCH)]


_KEY = (
    secrets.c.owner == bindparam("owner"),
    secrets.c.kind == bindparam("kind"),
    secrets.c.subject == bindparam("subject"),
    secrets.c.name == bindparam("name"),
)
MAX_VERSION = DirectStatement(select(func.max(secrets.c.version)).where(*_KEY))


def key_params(ref: Named) -> dict[str, str]:
    """The parameters of one secret's key (of :data:`MAX_VERSION`)."""
    return {"owner": ref.owner, "kind": ref.kind, "subject": ref.subject, "name": ref.name}


def key_of(i: int) -> tuple[Any, ...]:
    """The key of the ``i``-th reference of a batch (parameters ``owner_i``, …)."""
    return (
        secrets.c.owner == bindparam(f"owner_{i}"),
        secrets.c.kind == bindparam(f"kind_{i}"),
        secrets.c.subject == bindparam(f"subject_{i}"),
        secrets.c.name == bindparam(f"name_{i}"),
    )


def batch_params(refs: Sequence[Named]) -> dict[str, str]:
    """The parameters of ``key_of(0)``, ``key_of(1)``, … for ``refs``."""
    return {f"{k}_{i}": v for i, ref in enumerate(refs) for k, v in key_params(ref).items()}


@lru_cache(maxsize=BATCH)
def latest_of(count: int) -> DirectStatement:
    """The current row of each of ``count`` references: a ``UNION ALL`` of one indexed
    ``ORDER BY version DESC LIMIT 1`` read each."""
    return DirectStatement(latest_rows(count))


def latest_rows(count: int) -> Select[Any] | CompoundSelect[Any]:
    """The statement of :func:`latest_of`, for a caller that reads it with more (its
    parameters: :func:`batch_params`; its rows: ``SecretStore.open_rows``); at most
    BATCH references."""
    return _union(
        select(secrets).where(*key_of(i)).order_by(secrets.c.version.desc()).limit(1)
        for i in range(count)
    )


@lru_cache(maxsize=BATCH)
def present_of(count: int) -> DirectStatement:
    """The key of each of ``count`` references that has a version (one indexed
    ``LIMIT 1`` read each, in a ``UNION ALL``)."""
    key = (secrets.c.owner, secrets.c.kind, secrets.c.subject, secrets.c.name)
    return DirectStatement(_union(select(*key).where(*key_of(i)).limit(1) for i in range(count)))


def version_columns(count: int) -> list[Any]:
    """``count`` secrets' current version numbers, one column each (``v0``, …)."""
    return [
        select(func.max(secrets.c.version)).where(*key_of(i)).scalar_subquery().label(f"v{i}")
        for i in range(count)
    ]


def _union(members: Iterable[Select[Any]]) -> Select[Any] | CompoundSelect[Any]:
    """One statement of ``members``: a ``UNION ALL`` of them as subqueries (SQLite takes
    no LIMIT on a member of a compound select); a single one as it is."""
    selects = list(members)
    if len(selects) == 1:
        return selects[0]
    subqueries = (q.subquery(f"s{i}").select() for i, q in enumerate(selects))
    return union_all(*subqueries)


INSERT = DirectStatement(
    insert(secrets),
    columns=(
        "row_id",
        "owner",
        "kind",
        "name",
        "subject",
        "version",
        "kek_id",
        "wrapped_key",
        "ciphertext",
        "created_at",
        "policy",
    ),
)
