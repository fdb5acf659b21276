"""Session documents sent to a live sms by a hostile wallet: an aliased document (services
that alias one service with a large aliased environment) is refused at once, naming the
line, and other wallets' requests keep their latency meanwhile (it held them 21 s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from confide.client.sms import SmsClient
from confide.crypto.wallet import Wallet
from confide.errors import ConfideError
from tests.integration.sms_server import running_sms

MALLORY = Wallet.generate()
ALICE = Wallet.generate()


def alias_bomb(entries: int = 1_000, services: int = 5_000) -> str:
    """About 50 KB that a parser expanding aliases reads as services x entries values."""
    environment = "".join(f"      E{i}: v\n" for i in range(entries))
    return (
        "name: bomb\nversion: '1'\nservices:\n"
        f"  - &one\n    name: app\n    measurements: ['sim:{'ab' * 32}']\n    command: c\n"
        "    environment: &env\n" + environment + "  - *one\n" * services
    )


def test_an_aliased_session_is_refused_at_once_and_stalls_nobody(
    tmp_path: Path, database_url: str
) -> None:
    bomb = alias_bomb()
    assert 40_000 < len(bomb) < 256 * 1024
    refusals: list[tuple[float, str]] = []
    pushes: list[float] = []
    with running_sms(tmp_path / "sms", database_url) as base:
        mallory = SmsClient(base, wallet=MALLORY)
        alice = SmsClient(base, wallet=ALICE)
        alice.push_requester_secret("warm-up", b"v")

        def attack() -> None:
            for _ in range(5):
                start = time.perf_counter()
                with pytest.raises(ConfideError) as info:
                    mallory.create_session(bomb, {}, "bomb.yml")
                refusals.append((time.perf_counter() - start, str(info.value)))

        attacker = threading.Thread(target=attack)
        attacker.start()
        for index in range(20):
            start = time.perf_counter()
            assert alice.push_requester_secret(f"s{index}", b"value") == 1
            pushes.append(time.perf_counter() - start)
        attacker.join(120)
        assert not attacker.is_alive()
    assert len(refusals) == 5
    for elapsed, message in refusals:
        assert "400" in message and "bomb.yml:4: anchor &one" in message, message
        assert elapsed < 2.0, refusals  # a guard against expansion, not a benchmark
    assert max(pushes) < 2.0, pushes
