"""Names the CLI turns into addresses: derived from the owner and the name, never taken
from the hub's list (a hub could list another app under your app's name)."""

from __future__ import annotations

from typing import Any

import pytest

from confide.client.orders import resolve
from confide.errors import ConfideError
from confide.records import record_address

ME = "0x" + "a" * 40
OTHER = "0x" + "b" * 40


class LyingHub:
    """Lists an attacker's app under every name asked for."""

    def __init__(self, known: set[str]) -> None:
        self.known = known

    def deployment(self) -> str:
        return "dep"

    def record(self, address: str) -> Any:
        return object() if address in self.known else None

    def views(self, kind: str, owner: str | None = None) -> list[dict[str, Any]]:
        return [{"name": "cubic", "owner": ME, "address": "0x" + "e" * 40}]


class Platform:
    def __init__(self, hub: LyingHub, embedded: bool) -> None:
        self.hub = hub
        self._embedded = embedded

    def embedded(self) -> bool:
        return self._embedded


def test_your_own_name_is_derived_whatever_the_hub_lists() -> None:
    mine = record_address("app", "dep", ME, "cubic")
    for embedded in (False, True):
        platform: Any = Platform(LyingHub({mine}), embedded)
        assert resolve(platform, "app", "cubic", ME) == mine
    # Not deployed yet, on a remote hub: still your own address, never the hub's pick.
    assert resolve(Platform(LyingHub(set()), False), "app", "cubic", ME) == mine  # type: ignore[arg-type]


def test_another_owners_record_needs_owner_slash_name_or_an_address() -> None:
    platform: Any = Platform(LyingHub(set()), False)
    theirs = record_address("workerpool", "dep", OTHER, "pool")
    assert resolve(platform, "workerpool", f"{OTHER}/pool", ME) == theirs
    assert resolve(platform, "workerpool", theirs.upper().replace("0X", "0x"), ME) == theirs
    with pytest.raises(ConfideError, match="OWNER/NAME"):
        resolve(platform, "app", "cubic")  # no wallet: a bare name is nobody's
    with pytest.raises(ConfideError, match="not a wallet address"):
        resolve(platform, "app", "0x12/cubic", ME)
    with pytest.raises(ConfideError, match="does not name a app"):
        resolve(platform, "app", "no spaces", ME)


def test_the_loopback_up_may_name_its_operators_pool() -> None:
    platform: Any = Platform(LyingHub(set()), True)
    assert resolve(platform, "app", "cubic", ME) == "0x" + "e" * 40
