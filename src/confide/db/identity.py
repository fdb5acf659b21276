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

import os
import time
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from confide.crypto.signing import SigningKey
from confide.db.engine import reading
from confide.db.schema import service_identity
from confide.errors import ConfideError


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


DEPLOYMENT = "deployment_id"


def load_identity(
    engine: Engine,
    service: str,
    home: Path,
    *,
    deployment_id: str = "",
    key_file: Path | None = None,
    key_name: str = "signing-key",
    key_option: str = "--signing-key",
) -> tuple[str, SigningKey]:
    """A service's deployment id and signing key, the same at every replica on one
    database (else ConfideError naming what differs and how to fix it).

    The deployment id: ``deployment_id`` if given, else the one kept in
    ``home/deployment-id``, at a first start the one the database recorded (another
    replica's), or else a new one. The key: ``key_file`` (replicas are given one), else
    ``home/<key_name>``, made at first start. Both public values are recorded
    (:func:`recorded`) under the key's name with ``_`` for ``-``.
    """
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not deployment_id:
        kept = home / "deployment-id"
        if kept.exists():
            deployment_id = kept.read_text().strip()
        else:
            known = recorded(engine, service, {}).get(DEPLOYMENT)
            deployment_id = create_once(kept, known or f"d-{os.urandom(8).hex()}")
    key = _signing_key(home / key_name if key_file is None else key_file, made=key_file is None)
    key_row = key_name.replace("-", "_")
    ours = {DEPLOYMENT: deployment_id, key_row: key.public_bytes().hex()}
    theirs = recorded(engine, service, ours)
    problems = []
    if theirs[DEPLOYMENT] != deployment_id:
        problems.append(
            f"deployment id {theirs[DEPLOYMENT]}, but this {service} has {deployment_id} "
            f"(start it with --deployment {theirs[DEPLOYMENT]}, or copy the first's "
            f"$CONFIDE_HOME/{service}/deployment-id)"
        )
    if theirs[key_row] != ours[key_row]:
        problems.append(
            f"{key_name.replace('-', ' ')} {theirs[key_row][:16]}…, but this {service} has "
            f"{ours[key_row][:16]}… (start it with {key_option} FILE: a copy of the first's "
            f"$CONFIDE_HOME/{service}/{key_name})"
        )
    if problems:
        raise ConfideError(
            f"this database is served by a {service} with "
            + "; and with ".join(problems)
            + ": every replica on one database shares them"
        )
    return deployment_id, key


def _signing_key(where: Path, *, made: bool) -> SigningKey:
    if made:
        seed = create_once(where, SigningKey.generate().seed().hex())
    else:
        try:
            seed = where.read_text().strip()
        except OSError as exc:
            raise ConfideError(f"cannot read the key {where}: {exc.strerror}") from None
    try:
        raw = bytes.fromhex(seed)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfideError(f"{where} is not a signing key: it must hold 64 hex digits")
    return SigningKey.from_seed(raw)


def create_once(path: Path, value: str) -> str:
    """The file's content; written (0600, complete or not at all) if it does not exist.

    The value is written to a temporary file and linked into place, so processes that
    start together agree on one value and none reads half a file.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won: use its value
        finally:
            tmp.unlink()
    return path.read_text().strip()
