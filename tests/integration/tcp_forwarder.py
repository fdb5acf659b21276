"""A small TCP forwarder on loopback that a test can cut and restore, like a network.

Each accepted connection is piped to the upstream address by two threads. ``cut()``
closes the listener and every connection (both sides see them end, as when a link or
the database host goes away); ``restore()`` listens again on the same port.
``silence()`` keeps every connection open and accepts new ones, but forwards nothing
more: what is sent is read and dropped, as by a server that stopped answering whose
kernel still acknowledges (no TCP timeout ever fires). ``cut()`` ends that.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.integration.sms_server import free_port


class TcpForwarder:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._silent = threading.Event()
        self.restore()

    def silence(self) -> None:
        self._silent.set()

    def restore(self) -> None:
        self._silent.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            _close(connection)

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if self._silent.is_set():  # held open, read and never answered
                with self._lock:
                    self._open.add(client)
                threading.Thread(target=self._pump, args=(client, None), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if sink is not None and not self._silent.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            if sink is not None:
                _close(sink)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
