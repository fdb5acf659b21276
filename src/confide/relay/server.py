"""The worker's end of the relay: the enclave runtime's only way out of its sandbox.

The worker keeps one end of a ``socketpair`` and passes the other to the runtime as an
inherited file descriptor. For each request of the runtime, on a thread of its own:

- ``connect``: resolve the host once, refuse IANA special-purpose addresses
  (:mod:`confide.relay.addresses`) unless the (host, port) is one of the job's services
  or loopback is allowed (tests), connect to the address that was checked and hand the
  connected socket over (SCM_RIGHTS). The bytes never pass through the worker: the
  runtime's TLS ends inside the runtime.
- ``sign``: the worker's wallet signs the runtime's attestation request (a canonical
  request, ``confide-request-v1\\n`` …, POST …/v1/attest to an sms), which authenticates
  the worker to the sms; never any other text (an order, a record, an upload, a task
  report), so a runtime cannot make the wallet sign something else.
- ``stage``: the runtime reached a stage; the worker reports it to the hub.
- ``job`` (a relay made with ``on_job``: the runtime was started before its task was
  claimed): blocks in ``on_job`` until the worker has written the job (``ok``) or stops
  (``ok`` false). Asked once; before its ``ok``, every other request is refused.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from confide.crypto.requests import RequestSigner
from confide.errors import ConfideError
from confide.relay.addresses import AddressRefusedError, check_address, resolve
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

MAX_SIGN_CHARS = 16 * 1024
CONNECT_TIMEOUT = 10.0


Endpoint = tuple[str, int]


def service_endpoint(url: str) -> Endpoint:
    """The (host, port) a service URL names, as the runtime will ask to connect to it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfideError(f"{url!r} is not an http(s) service URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return normal_host(parts.hostname), port


def normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


ATTEST_PATH = "/v1/attest?"  # path?query of the one request signed (any mount prefix)


class RelayServer:
    """Serves one runtime on ``sock`` (which it now owns) until the runtime closes its
    end or :meth:`close` is called."""

    def __init__(
        self,
        sock: socket.socket,
        wallet: RequestSigner,
        services: Iterable[Endpoint],
        allow_loopback: bool,
        on_stage: Callable[[str], None],
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        on_job: Callable[[], bool] | None = None,
    ) -> None:
        self._sock = sock
        self._wallet = wallet
        self._services = {(normal_host(host), int(port)) for host, port in services}
        self._allow_loopback = allow_loopback
        self._on_stage = on_stage
        self._timeout = connect_timeout
        self._on_job = on_job
        self._job = "none" if on_job is None else "waiting"  # waiting | asked | handed | none
        self.refused: list[str] = []  # why each refused request was refused (no secrets)
        self._thread = threading.Thread(target=self._serve, name="confide-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(30)
        self._sock.close()

    def __enter__(self) -> RelayServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- serving --------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._serve_lines()
        finally:  # the runtime sees the relay gone, whatever ended it
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _serve_lines(self) -> None:
        reader = LineReader(self._sock)
        while True:
            try:
                received = reader.read()
            except (OSError, RelayError):
                return
            if received is None:
                return
            line, fds = received
            for fd in fds:  # the runtime has nothing to hand the worker
                close_quietly(fd)
            try:
                self._answer(line)
            except OSError:
                return

    def _answer(self, line: bytes) -> None:
        connected: socket.socket | None = None
        answer: dict[str, Any]
        try:
            request = decode(line)
            op = request.get("op")
            if op == "job":
                answer = self._hand_job()
            elif self._job in ("waiting", "asked"):
                raise RelayError("no job was handed over yet: the runtime asks for it first")
            elif op == "connect":
                connected = self._connect(request)
                answer = {"ok": True}
            elif op == "sign":
                answer = self._sign(request)
            elif op == "stage":
                answer = self._stage(request)
            else:
                raise RelayError(f"unknown relay operation {str(op)[:40]!r}")
        except ConfideError as exc:
            self.refused.append(str(exc))
            self._sock.sendall(encode({"ok": False, "error": str(exc)}))
            return
        except Exception as exc:  # the worker's side broke: say so, keep serving
            why = f"the relay failed ({type(exc).__name__})"
            self.refused.append(why)
            self._sock.sendall(encode({"ok": False, "error": why}))
            return
        if connected is None:
            self._sock.sendall(encode(answer))
            return
        try:
            socket.send_fds(self._sock, [encode(answer)], [connected.fileno()])
        finally:
            connected.close()  # the runtime holds its own copy now

    def _connect(self, request: dict[str, Any]) -> socket.socket:
        host, port = request.get("host"), request.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise RelayError('connect takes {"host": text, "port": number}')
        addresses = resolve(normal_host(host), port)  # once: we connect to what we check
        if (normal_host(host), port) not in self._services:
            for _, address in addresses:
                try:
                    check_address(address, allow_loopback=self._allow_loopback)
                except AddressRefusedError as exc:
                    raise AddressRefusedError(f"{host}:{port}: {exc}") from None
        failures: list[str] = []
        for family, address in addresses:
            conn = socket.socket(family, socket.SOCK_STREAM)
            conn.settimeout(self._timeout)
            try:
                conn.connect((str(address), port))
            except OSError as exc:
                conn.close()
                failures.append(f"{address}: {exc.strerror or exc}")
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn
        raise RelayError(f"cannot connect to {host}:{port} ({'; '.join(failures)})")

    def _hand_job(self) -> dict[str, Any]:
        if self._on_job is None:
            raise RelayError("this runtime was given its job at start: there is none to wait for")
        if self._job != "waiting":
            raise RelayError("the job was asked for already")
        self._job = "asked"
        if not self._on_job():  # blocks until the worker has a task, or stops
            return {"ok": False, "error": "the worker is stopping: no job"}
        self._job = "handed"
        return {"ok": True}

    def _sign(self, request: dict[str, Any]) -> dict[str, Any]:
        message = request.get("message")
        if not isinstance(message, str) or not message.startswith(REQUEST_LABEL):
            raise RelayError(
                "the worker's wallet signs only canonical requests (confide-request-v1): refused"
            )
        if len(message) > MAX_SIGN_CHARS:
            raise RelayError(f"a request to sign is at most {MAX_SIGN_CHARS} characters")
        # only what a runtime needs the worker's name for: its attestation to an sms
        # (never a blob upload, a task report or any other write in the worker's name)
        lines = message.split("\n")
        probe = len(lines) == 3 and lines[1] == PROBE  # no server takes it as a request
        attest = (
            len(lines) == 8
            and lines[1].startswith("sms/")
            and lines[2] == "POST"
            and lines[3].endswith(ATTEST_PATH)  # under `confide up`: /sms/v1/attest
        )
        if not (probe or attest):
            raise RelayError(
                "the worker's wallet signs only a runtime's attestation request "
                "(POST /v1/attest to an sms): refused"
            )
        return {
            "ok": True,
            "signature": self._wallet.sign_text(message),
            "address": self._wallet.address,
        }

    def _stage(self, request: dict[str, Any]) -> dict[str, Any]:
        status = request.get("status")
        if status not in STAGES:
            raise RelayError(f"stage is one of {', '.join(STAGES)}")
        try:
            self._on_stage(str(status))
        except Exception as exc:  # the hub may be away for a moment: the task goes on
            raise RelayError(f"the stage was not reported: {exc}") from None
        return {"ok": True}
