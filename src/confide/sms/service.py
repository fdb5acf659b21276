"""The sms core: configuration, stores and identities, without HTTP."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from confide import __version__
from confide.attestation.token import TokenIssuer
from confide.crypto.envelope import KeyEncryptionKey
from confide.crypto.signing import SigningKey
from confide.db import make_engine, upgrade
from confide.sms.registry import MemoryRegistry, Registry
from confide.sms.secrets import SecretStore
from confide.sms.sessions import SessionStore


@dataclass(frozen=True)
class SmsConfig:
    home: Path  # $CONFIDE_HOME/sms: KEK and signing key files live here
    db_url: str
    sms_id: str = "sms"
    deployment_id: str = ""  # "": the id made at first start, kept in home/deployment-id
    allow_sim: bool = False

    @property
    def audience(self) -> str:
        """What a signed request names, so it is useless at any other service or deployment."""
        return f"sms/{self.deployment_id}"


class Sms:
    """Everything the sms knows and does, callable without a server."""

    def __init__(
        self, config: SmsConfig, engine: Engine | None = None, registry: Registry | None = None
    ) -> None:
        self.config = config
        # Apps, datasets, workerpools and tasks: the hub's, or a static file's (see registry).
        self.registry: Registry = registry if registry is not None else MemoryRegistry()
        self.engine = engine or make_engine(config.db_url)
        upgrade(self.engine)
        config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not config.deployment_id:
            deployment = _create_once(config.home / "deployment-id", f"d-{os.urandom(8).hex()}")
            self.config = config = dataclasses.replace(config, deployment_id=deployment)
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
    seed = _create_once(path, SigningKey.generate().seed().hex())
    return SigningKey.from_seed(bytes.fromhex(seed))


def _create_once(path: Path, value: str) -> str:
    """The file's content; written (0600, complete or not at all) if it does not exist.

    The value is written to a temporary file and linked into place, so processes that
    start together agree on one value and none reads half a file.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won: use its value
        finally:
            tmp.unlink()
    return path.read_text().strip()
