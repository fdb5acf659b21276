"""Signed requests against a real database: replay refused across restarts and racers."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, func, select

from confide.crypto.requests import SignedBy, sign_request, verify_request
from confide.crypto.wallet import Wallet
from confide.db import make_engine, prune_request_nonces, record_request, upgrade
from confide.db.schema import request_nonces
from confide.errors import AuthError

NOW = 1_800_000_000
AUDIENCE = "sms/deployment-1"


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # idempotent on every start
    return engine


def _signed() -> SignedBy:
    wallet = Wallet.generate()
    headers = sign_request(wallet, audience=AUDIENCE, method="POST", path="/v1/x", now=NOW)
    return verify_request(
        headers,
        audience=AUDIENCE,
        method="POST",
        path="/v1/x",
        query="",
        content_type="",
        body=b"",
        now=NOW,
    )


def test_a_nonce_is_accepted_once(engine: Engine) -> None:
    signed = _signed()
    with engine.begin() as connection:
        record_request(connection, signed, NOW)
    with pytest.raises(AuthError, match="request replayed"), engine.begin() as connection:
        record_request(connection, signed, NOW + 1)


def test_replay_is_refused_after_a_restart(engine: Engine, database_url: str) -> None:
    signed = _signed()
    with engine.begin() as connection:
        record_request(connection, signed, NOW)
    engine.dispose()
    restarted = make_engine(database_url)
    upgrade(restarted)
    with pytest.raises(AuthError, match="request replayed"), restarted.begin() as connection:
        record_request(connection, signed, NOW + 5)


def test_a_replay_rolls_back_the_request_effect(engine: Engine) -> None:
    """The nonce row and the effect share a transaction: a replay leaves no effect."""
    first, second = _signed(), _signed()
    with engine.begin() as connection:
        record_request(connection, first, NOW)

    def replayed_request() -> None:
        with engine.begin() as connection:
            record_request(connection, second, NOW)  # the "effect" of the replayed request
            record_request(connection, first, NOW)  # then the replay is detected

    with pytest.raises(AuthError):
        replayed_request()
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(request_nonces)).scalar()
    assert count == 1  # the second request's row was rolled back with the failure


def test_two_racers_with_the_same_request_one_wins(engine: Engine) -> None:
    signed = _signed()
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def racer() -> None:
        barrier.wait()
        try:
            with engine.begin() as connection:
                record_request(connection, signed, NOW)
            outcomes.append("accepted")
        except AuthError:
            outcomes.append("replay")

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["accepted", "replay"]


def test_old_nonces_are_pruned_only_when_no_longer_replayable(engine: Engine) -> None:
    """A record outlives the 600 s in which its request can be replayed by a window more:
    one written 800 s ago (by a replica whose clock runs up to 300 s behind this one's)
    is kept."""
    old, recent = _signed(), _signed()
    with engine.begin() as connection:
        record_request(connection, old, NOW - 901)
        record_request(connection, recent, NOW - 800)
        assert prune_request_nonces(connection, NOW) == 1
    with pytest.raises(AuthError), engine.begin() as connection:
        record_request(connection, recent, NOW)
