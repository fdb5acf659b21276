"""What the replicas of one service on one database must agree on, recorded by the first.

Replicas behind one load-balanced URL must be one service to their clients: a request
signed after reading one replica's ``/v1/info`` names its audience (deployment id and
token key), and any replica may receive it. A replica started with its own deployment id
or token key would answer 401 to those requests, with no warning. So the first replica
to start records its values here, and every later one compares its own with them
(:func:`recorded`); the caller refuses to start on a difference, naming which.

The values are public (they are in ``/v1/info``); the token key's private half is never
here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from confide.db.engine import reading
from confide.db.schema import service_identity


def recorded(engine: Engine, service: str, values: Mapping[str, str]) -> dict[str, str]:
    """The values recorded for ``service``: each of ``values`` that none had recorded is
    recorded now (the first replica's; of replicas starting together, one wins)."""
    found = _read(engine, service)
    missing = {name: value for name, value in values.items() if name not in found}
    if missing:
        now = int(time.time())
        rows = [
            {"service": service, "name": name, "value": value, "recorded_at": now}
            for name, value in missing.items()
        ]
        try:
            with engine.begin() as connection:
                connection.execute(insert(service_identity), rows)
        except IntegrityError:
            pass  # another replica recorded them first: its values are the ones
        found = _read(engine, service)
    return found


def _read(engine: Engine, service: str) -> dict[str, str]:
    query = select(service_identity.c.name, service_identity.c.value).where(
        service_identity.c.service == service
    )
    with reading(engine) as connection:
        return {str(name): str(value) for name, value in connection.execute(query)}
