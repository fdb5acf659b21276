"""The relay over a real socketpair: connections come through SCM_RIGHTS and work with
httpx (plain and TLS made inside the runtime), special-purpose addresses are refused
before any connection (redirects included), the wallet signs only canonical requests,
stages reach the worker."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from confide.crypto.wallet import Wallet, recover_signer
from confide.relay.client import RelayChannel, RelaySigner, RelayTransport
from confide.relay.protocol import RelayError
from confide.relay.server import RelayServer
from confide.sms.tasks import ORDER_LABEL

WALLET = Wallet.generate()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            target = self.path.partition("?to=")[2]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def http_server(context: ssl.SSLContext | None = None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def relay(
    *, allow_loopback: bool = False, services: tuple[tuple[str, int], ...] = ()
) -> Iterator[tuple[RelayChannel, list[str], RelayServer]]:
    worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stages: list[str] = []
    server = RelayServer(worker_end, WALLET, set(services), allow_loopback, stages.append)
    channel = RelayChannel(runtime_end.detach())
    try:
        yield channel, stages, server
    finally:
        channel.close()
        server.close()


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_connections_come_through_the_relay() -> None:
    with http_server() as port, relay(allow_loopback=True) as (channel, _, server):
        with httpx.Client(transport=RelayTransport(channel)) as client:
            for path in ("/a", "/b"):
                response = client.get(f"http://127.0.0.1:{port}{path}")
                assert response.status_code == 200
                assert response.text == f"hello {path}"
        # A bare descriptor works too (one channel per descriptor).
        sock = channel.connect("127.0.0.1", port)
        assert sock.getpeername()[1] == port
        assert not sock.get_inheritable()
        sock.close()
        assert server.refused == []


def test_tls_ends_inside_the_runtime(tmp_path: Path) -> None:
    server_context, client_context = self_signed(tmp_path)
    with http_server(server_context) as port, relay(allow_loopback=True) as (channel, _, _):
        transport = RelayTransport(channel, verify=client_context)
        with httpx.Client(transport=transport) as client:
            response = client.get(f"https://localhost:{port}/secure")
        assert response.text == "hello /secure"


def test_tls_is_verified_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA bundle is loaded at the first https connection, and it is certifi's only:
    a server whose certificate only the host's store trusts (the host mounts /etc/ssl
    into the runtime's sandbox) is refused."""
    server_context, _ = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # the host's store
    with (
        http_server(server_context) as port,
        relay(allow_loopback=True) as (channel, _, _),
        httpx.Client(transport=RelayTransport(channel)) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(f"https://localhost:{port}/secure")


def test_special_purpose_addresses_are_refused_before_connecting() -> None:
    with http_server() as port, relay() as (channel, _, server):
        with httpx.Client(transport=RelayTransport(channel)) as client:
            for url in (
                f"http://127.0.0.1:{port}/",
                f"http://localhost:{port}/",  # a name is resolved, then checked
                f"http://[::ffff:127.0.0.1]:{port}/",
                "http://169.254.169.254/latest/meta-data/",
                "http://10.1.2.3/",
                "http://[fe80::1]/",
            ):
                with pytest.raises(httpx.ConnectError, match="special-purpose"):
                    client.get(url)
        assert len(server.refused) == 6
        assert "link-local" in server.refused[3]


def test_a_redirect_to_a_private_address_is_refused() -> None:
    with http_server() as port, relay(allow_loopback=True) as (channel, _, server):
        client = httpx.Client(transport=RelayTransport(channel), follow_redirects=True)
        with client, pytest.raises(httpx.ConnectError, match=r"169\.254\.169\.254.*link-local"):
            client.get(f"http://127.0.0.1:{port}/redirect?to=http://169.254.169.254/x")
        assert any("169.254.169.254" in why for why in server.refused)


def test_the_jobs_services_are_reachable_without_the_loopback_flag() -> None:
    with (
        http_server() as port,
        relay(services=(("127.0.0.1", port),)) as (channel, _, _),
        httpx.Client(transport=RelayTransport(channel)) as client,
    ):
        assert client.get(f"http://127.0.0.1:{port}/sms").text == "hello /sms"
        with pytest.raises(httpx.ConnectError, match="loopback"):
            client.get(f"http://127.0.0.1:{port + 1 if port < 65535 else 1}/")


def test_the_wallet_signs_only_canonical_requests() -> None:
    with relay() as (channel, _, _):
        signer = RelaySigner(channel)
        assert signer.address == WALLET.address  # learnt from a probe
        text = (
            "confide-request-v1\nsms/test/ab\nPOST\n/v1/attest?\n\n" + "0" * 64 + "\n1\n" + "a" * 32
        )
        assert recover_signer(text, signer.sign_text(text)) == WALLET.address
        # any other request in the worker's name is refused: an upload, a report, another
        # service, another sms route
        for other in (
            text.replace("POST\n/v1/attest?", "PUT\n/v1/blobs/" + "0" * 64 + "?"),
            text.replace("sms/test/ab", "hub/test/ab").replace(
                "/v1/attest", "/v1/tasks/0x1/status"
            ),
            text.replace("sms/test/ab", "storage/test/ab"),
            text.replace("/v1/attest?", "/v1/platforms?"),
            text.replace("/v1/attest?", "/v1/attest?x=1"),
        ):
            with pytest.raises(RelayError, match="only a runtime's attestation request"):
                signer.sign_text(other)
        for refused in (
            ORDER_LABEL + '{"requester":"0x"}',
            "confide-request-v2\nsomething",
            "hello",
            "",
            " confide-request-v1\n",
        ):
            with pytest.raises(RelayError, match="signs only canonical requests"):
                signer.sign_text(refused)
        with pytest.raises(RelayError, match="at most"):
            signer.sign_text("confide-request-v1\n" + "x" * 20_000)
        pinned = RelaySigner(channel, address="0x" + "11" * 20)
        with pytest.raises(RelayError, match="not as the worker"):
            pinned.sign_text(text)


def test_stages_reach_the_worker_and_garbage_is_refused() -> None:
    with relay() as (channel, stages, _):
        channel.stage("PRE_COMPUTE")
        channel.stage("ATTESTING")
        assert stages == ["PRE_COMPUTE", "ATTESTING"]
        with pytest.raises(RelayError, match="stage is one of"):
            channel.call({"op": "stage", "status": "COMPLETED"})
        with pytest.raises(RelayError, match="unknown relay operation"):
            channel.call({"op": "exec", "argv": ["sh"]})
        with pytest.raises(RelayError, match="connect takes"):
            channel.call({"op": "connect", "host": "example.org", "port": "443"})
        channel.stage("COMPUTING")  # the channel still works after refusals
        assert stages[-1] == "COMPUTING"
    with pytest.raises(RelayError, match="closed"):
        channel.stage("POST_COMPUTE")


def test_a_failing_worker_callback_does_not_end_the_relay() -> None:
    def broken(_: str) -> None:
        raise RuntimeError("hub away")

    worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = RelayServer(worker_end, WALLET, set(), False, broken)
    channel = RelayChannel(runtime_end.detach())
    try:
        with pytest.raises(RelayError, match="the stage was not reported: hub away"):
            channel.stage("ATTESTING")
        assert RelaySigner(channel).address == WALLET.address  # still serving
    finally:
        channel.close()
        server.close()


def test_the_relay_ends_when_the_runtime_closes_its_end() -> None:
    worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = RelayServer(worker_end, WALLET, set(), False, lambda _: None)
    runtime_end.sendall(b'{"op":"stage","status":"ATTESTING"}\n')
    assert runtime_end.recv(100) == b'{"ok":true}\n'
    runtime_end.sendall(b"x" * 70_000)  # a line past the bound: the relay hangs up
    runtime_end.shutdown(socket.SHUT_WR)
    assert runtime_end.recv(100) == b""
    runtime_end.close()
    server.close()


def _job_relay(on_job: object) -> tuple[RelayServer, RelayChannel, list[str]]:
    worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stages: list[str] = []
    server = RelayServer(worker_end, WALLET, set(), False, stages.append, on_job=on_job)  # type: ignore[arg-type]
    return server, RelayChannel(runtime_end.detach()), stages


def test_a_prewarmed_runtime_waits_for_its_job_and_asks_once() -> None:
    ready = threading.Event()
    server, channel, stages = _job_relay(lambda: ready.wait(30))
    try:
        # before the job: nothing but the job itself (no signature, no connection, no stage)
        with pytest.raises(RelayError, match="no job was handed over yet"):
            channel.stage("PRE_COMPUTE")
        with pytest.raises(RelayError, match="no job was handed over yet"):
            RelaySigner(channel).sign_text("confide-request-v1\nanything")
        answered: list[bool] = []
        waiter = threading.Thread(target=lambda: answered.append(channel.wait_job()))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not answered  # blocked until the worker has a task
        ready.set()
        waiter.join(10)
        assert answered == [True]
        channel.stage("PRE_COMPUTE")  # now it serves
        assert stages == ["PRE_COMPUTE"]
        with pytest.raises(RelayError, match="the job was asked for already"):
            channel.call({"op": "job"})
    finally:
        channel.close()
        server.close()


def test_no_job_when_the_worker_stops_and_none_without_on_job() -> None:
    server, channel, stages = _job_relay(lambda: False)
    try:
        assert channel.wait_job() is False  # the worker stops: the runtime ends
        with pytest.raises(RelayError, match="no job was handed over yet"):
            channel.stage("PRE_COMPUTE")
        assert stages == []
    finally:
        channel.close()
        server.close()
    with relay() as (plain, _, _):  # a runtime given its job at start has none to wait for
        with pytest.raises(RelayError, match="there is none to wait for"):
            plain.call({"op": "job"})
        assert plain.wait_job() is False
