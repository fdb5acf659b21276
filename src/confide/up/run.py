"""Start ``confide up`` and say what it is: a development platform that protects nothing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from confide.up.compose import compose

BANNER = (
    "confide up: hub {base}, sms {base}/sms, storage {base}/storage\n"
    "  data under {home} (SQLite and blobs); deployment {deployment}\n"
    "  default workerpool {pool} (operator {operator})\n"
    "  sms key fingerprint {fingerprint}\n"
    "  WARNING: simulation is accepted here: it protects nothing from this machine's "
    "owner. For development only.\n"
)


def run(home: Path, port: int, workers: int) -> None:
    """Serve the embedded platform on 127.0.0.1:``port`` until SIGTERM or ^C."""
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
            sys.stderr.write(
                f"  --workers {workers}: workers arrive with `confide worker` (the next "
                f"release); none is started yet, so tasks stay RECEIVED\n"
            )
        sys.stderr.flush()
        serve(embedded.app, name="confide up", host="127.0.0.1", port=port, limits=embedded.limits)
    finally:
        embedded.close()
