"""Where confide keeps a user's files: ``$CONFIDE_HOME`` (default ``~/.confide``)."""

from __future__ import annotations

import os
from pathlib import Path


def confide_home() -> Path:
    return Path(os.environ.get("CONFIDE_HOME") or Path.home() / ".confide")


def default_wallet_path() -> Path:
    return confide_home() / "wallet.json"
