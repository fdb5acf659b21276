"""Which addresses the relay may connect to: never an IANA special-purpose one.

The enclave runtime reaches the network only through the worker's relay, and the URLs it
asks for come partly from the requester (input files). A requester must not be able to
make a worker probe its own network, its cloud metadata service or its loopback, so the
relay resolves a name once, refuses every address in the IANA special-purpose registries
(RFC 6890 and its updates: private, shared, loopback, link-local, documentation,
benchmarking, reserved, multicast, translation and tunnelling prefixes), IPv4-mapped and
IPv4-compatible IPv6 included, and connects to the address it checked (no second lookup
that DNS rebinding could answer differently).

Two exceptions, both decided by the relay's owner, never by the runtime: the job's own
services (the sms and storage URLs the worker was configured with, wherever they are) and,
for tests only, loopback.
"""

from __future__ import annotations

import ipaddress
import socket

from confide.errors import ConfideError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA IPv4 Special-Purpose Address Registry, plus multicast (224/4) and the limited
# broadcast; each with the name an error message gives.
_IPV4 = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "'this network'"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata services live here)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.31.196.0/24", "AS112 service"),
        ("192.52.193.0/24", "AMT"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("192.175.48.0/24", "direct delegation AS112 service"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "limited broadcast"),
    )
)

# IANA IPv6 Special-Purpose Address Registry, plus multicast and the deprecated
# site-local and IPv4-compatible prefixes.
_IPV6 = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::1/128", "loopback"),
        ("::/128", "unspecified"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("::/8", "reserved"),
        ("64:ff9b::/96", "IPv4/IPv6 translation"),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
        ("100::/64", "discard-only"),
        ("100:0:0:1::/64", "dummy prefix"),
        ("2001::/23", "IETF protocol assignments (Teredo, ORCHIDv2, benchmarking, …)"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("2620:4f:8000::/48", "direct delegation AS112 service"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing (SRv6) SIDs"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)

_LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))


class AddressRefusedError(ConfideError):
    """The relay will not connect there; the message names the address and why."""


def parse_address(text: str) -> IPAddress:
    """An address as ``getaddrinfo`` gives it (an IPv6 scope ``%eth0`` is refused)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise AddressRefusedError(f"{text!r} is not an IP address") from None


def special_purpose(address: IPAddress) -> str | None:
    """Why ``address`` is special-purpose (a short name), or None for a global one."""
    table = _IPV4 if isinstance(address, ipaddress.IPv4Address) else _IPV6
    for network, why in table:
        if address in network:
            return why
    # Belt and braces: whatever Python's own tables say is not globally reachable.
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "reserved"
    if not address.is_global:
        return "not globally reachable"
    return None


def is_loopback(address: IPAddress) -> bool:
    """127.0.0.0/8 or ::1 (never an IPv4-mapped form: that is refused as mapped)."""
    return any(address in network for network in _LOOPBACK if network.version == address.version)


def check_address(address: IPAddress, *, allow_loopback: bool = False) -> None:
    """Raise AddressRefusedError unless the relay may connect to ``address``."""
    if allow_loopback and is_loopback(address):
        return
    why = special_purpose(address)
    if why is not None:
        raise AddressRefusedError(f"{address} is a special-purpose address ({why}): refused")


def resolve(host: str, port: int) -> list[tuple[int, IPAddress]]:
    """Every (family, address) ``host`` resolves to for TCP, resolved once, in order."""
    if not host or len(host) > 253 or not 0 < port < 65536:
        raise AddressRefusedError(f"{host!r} port {port} is not a host and port to connect to")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefusedError(f"cannot resolve {host!r}: {exc}") from None
    found: list[tuple[int, IPAddress]] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = parse_address(str(sockaddr[0]))
        if (family, address) not in found:
            found.append((family, address))
    if not found:
        raise AddressRefusedError(f"{host!r} resolves to no IP address")
    return found
