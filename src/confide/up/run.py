"""Start ``confide up`` and say what it is: a development platform that protects nothing."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confide.up.compose import compose

BANNER = (
    "confide up: hub {base}, sms {base}/sms, storage {base}/storage\n"
    "  data under {home} (SQLite and blobs); deployment {deployment}\n"
    "  default workerpool {pool} (operator {operator})\n"
    "  sms key fingerprint {fingerprint}\n"
    "  WARNING: simulation is accepted here: it protects nothing from this machine's "
    "owner. For development only.\n"
)


def run(home: Path, port: int, workers: int, *, allow_loopback_inputs: bool = False) -> None:
    """Serve the embedded platform on 127.0.0.1:``port`` with ``workers`` workers until
    SIGTERM or ^C."""
    from confide.web.server import serve  # noqa: PLC0415

    embedded = compose(home, port, time.time)
    try:
        sys.stderr.write(
            BANNER.format(
                base=embedded.base_url,
                home=home / "up",
                deployment=embedded.hub.deployment_id,
                pool=embedded.pool,
                operator=embedded.operator,
                fingerprint=embedded.sms.token_fingerprint(),
            )
        )
        if workers > 0:
            plural = "s" if workers > 1 else ""
            sys.stderr.write(
                f"  {workers} worker{plural} (sim) for the default workerpool, signing with "
                f"the operator wallet\n"
            )
        else:
            sys.stderr.write(
                "  no workers (--workers 0): tasks stay RECEIVED until `confide worker start` "
                "claims them\n"
            )
        sys.stderr.flush()
        if workers == 0:
            serve(
                embedded.app, name="confide up", host="127.0.0.1", port=port, limits=embedded.limits
            )
        else:
            _serve_with_workers(embedded, home, port, workers, allow_loopback_inputs)
    finally:
        embedded.close()


def _serve_with_workers(
    embedded: Any, home: Path, port: int, workers: int, allow_loopback_inputs: bool
) -> None:
    """The server on a thread, the workers on theirs; at SIGTERM or ^C the workers
    finish their running tasks first, then the server stops."""
    from confide.up.workers import UpWorkers  # noqa: PLC0415
    from confide.web.server import give_freed_memory_back, make_server  # noqa: PLC0415

    give_freed_memory_back()
    server = make_server(embedded.app, host="127.0.0.1", port=port, limits=embedded.limits)
    serving = threading.Thread(target=server.run, name="confide-up-server", daemon=True)
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        del frame
        if stop.is_set():  # a second ^C: do not wait for the running tasks
            server.should_exit = True
            return
        stopped_by.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    try:
        serving.start()
        while not server.started:
            if not serving.is_alive():
                raise SystemExit(1)  # uvicorn has said why (a port in use)
            time.sleep(0.01)
        pool = UpWorkers(embedded, home, workers, allow_loopback_inputs=allow_loopback_inputs)
        pool.start()
        while not stop.wait(0.5):
            if not serving.is_alive():
                break
        if stopped_by:
            sys.stderr.write("confide up: stopping the workers (running tasks finish first)\n")
        pool.stop()
        server.should_exit = True
        serving.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    cause = signal.Signals(stopped_by[0]).name if stopped_by else "a request to stop"
    ran = f"confide up stopped on {cause} after {time.monotonic() - started:.0f} s"
    if getattr(server, "cut_short", False):
        sys.stderr.write(f"{ran}: requests under way were cut short\n")
        raise SystemExit(1)
    sys.stderr.write(f"{ran}: requests under way finished, shut down cleanly\n")
