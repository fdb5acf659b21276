"""The runtime's end of the relay: httpx connections and request signatures through it.

Inside its sandbox the runtime has no network; its one inherited file descriptor is an
AF_UNIX socket to the worker's :class:`confide.relay.server.RelayServer`.

- :class:`RelayTransport` is an httpx transport whose every new TCP connection is asked
  of the relay (which checks the address) and arrives as a connected socket (SCM_RIGHTS);
  TLS is then made here, inside, so the worker sees only ciphertext.
- :class:`RelaySigner` duck-types a wallet (``address``, ``sign_text``) for
  :func:`confide.crypto.requests.sign_request`: the worker's wallet signs the canonical
  request, and nothing else.

One :class:`RelayChannel` serialises the requests of both (an answer is read before the
next request is sent); both also accept the bare file descriptor, then share one channel
per descriptor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import typing
from typing import Any

import httpcore
import httpx
from httpcore._backends.sync import SyncStream  # the socket stream httpcore's own backend uses

from confide.relay.protocol import (
    PROBE,
    REQUEST_LABEL,
    STAGES,
    LineReader,
    RelayError,
    close_quietly,
    decode,
    encode,
)

_CHANNELS: dict[int, RelayChannel] = {}
_CHANNELS_LOCK = threading.Lock()


class RelayChannel:
    """The runtime's socket to the relay: one request, then its answer, at a time."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        if self._sock.family != socket.AF_UNIX:
            raise RelayError(f"file descriptor {fd} is not a unix socket to the relay")
        self._sock.set_inheritable(False)
        self._reader = LineReader(self._sock)
        self._lock = threading.Lock()
        self.fd = fd
        self.closed = False

    @classmethod
    def for_fd(cls, fd: int) -> RelayChannel:
        with _CHANNELS_LOCK:
            channel = _CHANNELS.get(fd)
            if channel is None or channel.closed:
                channel = _CHANNELS[fd] = cls(fd)
            return channel

    def call(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Send ``request``, return its answer and any fds that came with it; a refusal
        raises RelayError with the relay's reason."""
        with self._lock:
            if self.closed:
                raise RelayError("the relay channel is closed")
            try:
                self._sock.sendall(encode(request))
                received = self._reader.read()
            except OSError as exc:
                raise RelayError(f"the relay channel broke: {exc.strerror or exc}") from None
        if received is None:
            raise RelayError("the relay closed the channel")
        line, fds = received
        try:
            answer = decode(line)
        except RelayError:
            for fd in fds:
                close_quietly(fd)
            raise
        if answer.get("ok") is not True:
            for fd in fds:
                close_quietly(fd)
            raise RelayError(f"the relay refused: {answer.get('error', 'no reason given')}")
        return answer, fds

    def connect(self, host: str, port: int) -> socket.socket:
        _, fds = self.call({"op": "connect", "host": host, "port": port})
        if len(fds) != 1:
            for fd in fds:
                close_quietly(fd)
            raise RelayError("the relay answered a connect without exactly one socket")
        sock = socket.socket(fileno=fds[0])
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock.close()
            raise RelayError("the relay handed over something that is not a TCP socket")
        sock.set_inheritable(False)
        return sock

    def wait_job(self) -> bool:
        """Ask the worker for the job (a pre-warmed runtime's first request) and wait:
        True once the worker has written it, False when there will be none (the worker
        stops, or the relay is gone)."""
        try:
            _, fds = self.call({"op": "job"})
        except RelayError:
            return False
        for fd in fds:
            close_quietly(fd)
        return True

    def stage(self, status: str) -> None:
        if status not in STAGES:
            raise RelayError(f"stage is one of {', '.join(STAGES)}")
        self.call({"op": "stage", "status": status})

    def close(self) -> None:
        """Close the descriptor: nothing started afterwards can reach the relay."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._sock.close()
        with _CHANNELS_LOCK:
            if _CHANNELS.get(self.fd) is self:
                del _CHANNELS[self.fd]


def channel_of(relay: int | RelayChannel) -> RelayChannel:
    return relay if isinstance(relay, RelayChannel) else RelayChannel.for_fd(relay)


class RelayBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every TCP connection made by the relay."""

    def __init__(self, channel: RelayChannel) -> None:
        self._channel = channel

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        del local_address, socket_options  # the relay decides how to connect
        try:
            sock = self._channel.connect(host, port)
        except RelayError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        sock.settimeout(timeout)
        return SyncStream(sock)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("the relay connects to TCP hosts only")

    def sleep(self, seconds: float) -> None:
        httpcore.SyncBackend().sleep(seconds)


class _TlsOnDemandPool(httpcore.ConnectionPool):
    """A connection pool whose TLS context (httpx's for ``verify``: certifi's CAs, never
    the host's store) is made at its first https connection. Loading the CA bundle costs
    20 ms of CPU, and a runtime whose sms is plain HTTP on the loopback never needs it."""

    def __init__(self, verify: ssl.SSLContext | bool, **options: Any) -> None:
        super().__init__(ssl_context=None, **options)
        self._verify = verify

    def create_connection(self, origin: httpcore.Origin) -> httpcore.ConnectionInterface:
        if origin.scheme != b"http" and self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context(self._verify, trust_env=False)
        return super().create_connection(origin)


class RelayTransport(httpx.HTTPTransport):
    """An httpx transport whose connections come from the relay (TLS made here)."""

    def __init__(
        self,
        relay: int | RelayChannel,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=8, max_keepalive_connections=4)
        # httpx.HTTPTransport takes no network backend: its pool is made again with ours,
        # so the one it makes here never connects (verify=False: no CA bundle loaded).
        super().__init__(verify=False, limits=limits, trust_env=False)
        self._pool.close()
        self._pool = _TlsOnDemandPool(
            verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=RelayBackend(channel_of(relay)),
        )


class RelaySigner:
    """The worker's wallet, as far as signing canonical requests goes."""

    def __init__(self, relay: int | RelayChannel, address: str | None = None) -> None:
        self._channel = channel_of(relay)
        self._address = None if address is None else address.lower()

    @property
    def address(self) -> str:
        """The worker's address: the one given (checked at each signature), else learnt
        from a probe that no service would take as a request (its audience is none)."""
        if self._address is None:
            self.sign_text(f"{REQUEST_LABEL}{PROBE}\n{os.urandom(16).hex()}")
        if self._address is None:  # pragma: no cover (sign_text sets it or raises)
            raise RelayError("the relay did not say whose wallet signs")
        return self._address

    def sign_text(self, message: str) -> str:
        answer, fds = self._channel.call({"op": "sign", "message": message})
        for fd in fds:
            close_quietly(fd)
        signature, address = answer.get("signature"), answer.get("address")
        if not isinstance(signature, str) or not isinstance(address, str):
            raise RelayError("the relay's signature answer is malformed")
        if self._address is not None and address.lower() != self._address:
            raise RelayError(
                f"the relay signed as {address}, not as the worker {self._address} of this job"
            )
        self._address = address.lower()
        return signature


def close_fd(fd: int) -> None:
    """Close a relay descriptor that no channel was made for."""
    with _CHANNELS_LOCK:
        channel = _CHANNELS.pop(fd, None)
    if channel is not None:
        channel.close()
    else:
        with contextlib.suppress(OSError):
            os.close(fd)
