"""The sms core: configuration, stores and identities, without HTTP."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from confide import __version__
from confide.attestation.token import TokenIssuer
from confide.crypto.envelope import KeyEncryptionKey
from confide.crypto.signing import SigningKey
from confide.db import make_engine, upgrade
from confide.sms.secrets import SecretStore
from confide.sms.sessions import SessionStore


@dataclass(frozen=True)
class SmsConfig:
    home: Path  # $CONFIDE_HOME/sms: KEK and signing key files live here
    db_url: str
    sms_id: str = "sms"
    deployment_id: str = "local"
    allow_sim: bool = False

    @property
    def audience(self) -> str:
        """What a signed request names, so it is useless at any other service or deployment."""
        return f"sms/{self.deployment_id}"


class Sms:
    """Everything the sms knows and does, callable without a server."""

    def __init__(self, config: SmsConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or make_engine(config.db_url)
        upgrade(self.engine)
        config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek = _kek(config.home)
        self.secrets = SecretStore(self.engine, kek)
        self.sessions = SessionStore(self.engine, self.secrets)
        self.tokens = TokenIssuer(config.sms_id, _signing_key(config.home / "token-key"))

    def info(self) -> dict[str, object]:
        backends = ["sgx", "tdx"] + (["sim"] if self.config.allow_sim else [])
        return {
            "service": "sms",
            "version": __version__,
            "sms_id": self.config.sms_id,
            "deployment_id": self.config.deployment_id,
            "audience": self.config.audience,
            "attestation_backends": backends,
            "allow_sim": self.config.allow_sim,
            "jwks": self.tokens.jwks(),
        }


def _kek(home: Path) -> KeyEncryptionKey:
    """CONFIDE_KEK (``ID:64 hex``) if set, else the 0600 file, created on first start."""
    text = os.environ.get("CONFIDE_KEK")
    if text:
        return KeyEncryptionKey.parse(text, "CONFIDE_KEK")
    return KeyEncryptionKey.load_or_create(home / "kek")


def _signing_key(path: Path) -> SigningKey:
    if not path.exists():
        key = SigningKey.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.seed().hex() + "\n")
        return key
    return SigningKey.from_seed(bytes.fromhex(path.read_text().strip()))
