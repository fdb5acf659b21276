"""The relay's address check: every IANA special-purpose address is refused (IPv4-mapped
IPv6 included), loopback only with the test flag, global addresses pass."""

from __future__ import annotations

import ipaddress

import pytest

from confide.relay.addresses import (
    AddressRefusedError,
    check_address,
    is_loopback,
    resolve,
    special_purpose,
)
from confide.relay.server import service_endpoint

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
    "::ffff:8.8.8.8",  # mapped forms are refused whatever they map
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "0.0.0.0",  # noqa: S104
    "0.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "192.0.0.8",
    "192.0.2.10",
    "198.51.100.7",
    "203.0.113.99",
    "198.18.0.1",
    "192.88.99.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
    "3fff::1",
    "2001::1",  # Teredo
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "100::1",
]
GLOBAL = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::1"]


@pytest.mark.parametrize("text", REFUSED)
def test_special_purpose_addresses_are_refused(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert special_purpose(address) is not None
    with pytest.raises(AddressRefusedError, match="special-purpose"):
        check_address(address)


@pytest.mark.parametrize("text", GLOBAL)
def test_global_addresses_pass(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert special_purpose(address) is None
    check_address(address)


def test_loopback_only_with_the_test_flag() -> None:
    for text in ("127.0.0.1", "127.0.0.2", "::1"):
        check_address(ipaddress.ip_address(text), allow_loopback=True)
        assert is_loopback(ipaddress.ip_address(text))
    # The flag allows loopback, not its IPv4-mapped spelling, nor any other private range.
    for text in ("::ffff:127.0.0.1", "169.254.169.254", "10.0.0.1", "0.0.0.0"):  # noqa: S104
        with pytest.raises(AddressRefusedError):
            check_address(ipaddress.ip_address(text), allow_loopback=True)


def test_resolve_gives_addresses_once() -> None:
    found = resolve("127.0.0.1", 80)
    assert [str(address) for _, address in found] == ["127.0.0.1"]
    with pytest.raises(AddressRefusedError, match="port"):
        resolve("127.0.0.1", 0)
    with pytest.raises(AddressRefusedError, match="cannot resolve"):
        resolve("no-such-host.invalid", 443)


def test_service_endpoints() -> None:
    assert service_endpoint("http://127.0.0.1:8080/sms") == ("127.0.0.1", 8080)
    assert service_endpoint("https://SMS.Example.org./") == ("sms.example.org", 443)
    assert service_endpoint("http://[::1]/") == ("::1", 80)
