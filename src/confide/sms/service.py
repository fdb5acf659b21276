"""The sms core: configuration, stores and identities, without HTTP."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from confide import __version__
from confide.attestation.dcap import (
    CollateralDirectory,
    CollateralFile,
    CollateralSource,
    DcapVerifier,
    PccsCollateral,
)
from confide.attestation.sim import SimVerifier
from confide.attestation.token import TokenIssuer
from confide.attestation.verifier import Verifier
from confide.crypto.envelope import KeyEncryptionKey
from confide.crypto.info_proof import request_audience
from confide.db import make_engine, upgrade
from confide.db.engine import reading
from confide.db.identity import load_identity
from confide.db.schema import secrets as secrets_table
from confide.db.stores import DatabasePlatformRegistry
from confide.errors import ConfideError
from confide.sms.hub_registry import HttpRecordSource, HubRegistry
from confide.sms.kept_records import RecordKeeper
from confide.sms.registry import Registry
from confide.sms.secrets import SecretStore
from confide.sms.sessions import SessionStore

SERVICE = "sms"  # this service's rows in confide.db.identity


@dataclass(frozen=True)
class SmsConfig:
    home: Path  # $CONFIDE_HOME/sms: KEK and signing key files live here
    db_url: str
    sms_id: str = ""  # "": "sms-" + the deployment id (bound into report data and tokens)
    deployment_id: str = ""  # "": home/deployment-id, else the database's, else a new one
    allow_sim: bool = False
    collateral: Path | None = None  # SGX/TDX collateral: a JSON file or an FMSPC directory
    pccs_url: str | None = None  # or a PCCS to fetch it from
    token_key_file: Path | None = None  # None: home/token-key, made at first start
    hub_url: str | None = None  # the hub records and tasks are fetched from (--hub)


class Sms:
    """Everything the sms knows and does, callable without a server."""

    def __init__(
        self, config: SmsConfig, engine: Engine | None = None, registry: Registry | None = None
    ) -> None:
        self.config = config
        self.engine = engine or make_engine(config.db_url)
        upgrade(self.engine)
        # Apps, datasets, workerpools and tasks: owner-signed records, pushed here by their
        # owners and fetched from the hub, each verified here (confide.sms.hub_registry).
        if registry is None:
            source = None if config.hub_url is None else HttpRecordSource(config.hub_url)
            registry = HubRegistry(self.engine, source, None)
        if isinstance(registry, HubRegistry):
            registry.pin()  # refused here when the hub serves another deployment than before
            self.records = registry.keeper
        else:  # a test's registry: pushed records are kept, not looked up
            self.records = RecordKeeper(self.engine)
        self.registry: Registry = registry
        config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek, older = _kek(config.home), _previous_keks()
        _check_kek(self.engine, (kek, *older))
        # The deployment id and token key, the same at every replica on this database
        # (confide.db.identity.load_identity: else it refuses to start, naming which).
        deployment, token_key = load_identity(
            self.engine,
            SERVICE,
            config.home,
            deployment_id=config.deployment_id,
            key_file=config.token_key_file,
            key_name="token-key",
            key_option="--token-key",
        )
        self.config = config = dataclasses.replace(config, deployment_id=deployment)
        if not config.sms_id:  # distinct per deployment, so evidence and tokens are too
            sms_id = f"sms-{config.deployment_id}"
            self.config = config = dataclasses.replace(config, sms_id=sms_id)
        self.secrets = SecretStore(self.engine, kek, older)
        self.sessions = SessionStore(self.engine, self.secrets)
        self.platforms = DatabasePlatformRegistry(self.engine)  # one cache of known keys
        self.tokens = TokenIssuer(config.sms_id, token_key)
        # What a signed request names, so it is useless at any other service, deployment
        # or key (confide.crypto.info_proof.request_audience).
        self.audience = request_audience(config.deployment_id, self.tokens.public_key())

    def verifiers(self) -> dict[str, Verifier]:
        """The attestation backends this sms accepts: sim only with ``allow_sim`` (and
        only from registered platform keys); sgx and tdx when collateral is configured."""
        found: dict[str, Verifier] = {}
        source: CollateralSource | None = None
        if self.config.collateral is not None:
            path = self.config.collateral
            source = CollateralDirectory(path) if path.is_dir() else CollateralFile(path)
        elif self.config.pccs_url:
            source = PccsCollateral(self.config.pccs_url)
        if source is not None:
            found["sgx"] = DcapVerifier("sgx", source)
            found["tdx"] = DcapVerifier("tdx", source)
        if self.config.allow_sim:
            found["sim"] = SimVerifier(self.platforms)
        return found

    def hub_deployment(self) -> str | None:
        """The hub deployment records must name (None: no hub known yet: a pushed
        record's signature is checked, its deployment not)."""
        registry = self.registry
        return registry.deployment if isinstance(registry, HubRegistry) else None

    def token_fingerprint(self) -> str:
        """SHA-256 hex of the raw 32-byte token public key: what ``confide sms trust
        --fingerprint`` pins (printed at start)."""
        return hashlib.sha256(self.tokens.public_key()).hexdigest()

    def backends(self) -> list[str]:
        """The names of :meth:`verifiers`, without building them (``/v1/info`` asks often)."""
        hardware = self.config.collateral is not None or bool(self.config.pccs_url)
        return sorted(
            (["sgx", "tdx"] if hardware else []) + (["sim"] if self.config.allow_sim else [])
        )

    def info(self) -> dict[str, object]:
        backends = self.backends()
        return {
            "service": "sms",
            "version": __version__,
            "sms_id": self.config.sms_id,
            "deployment_id": self.config.deployment_id,
            "audience": self.audience,
            "attestation_backends": backends,
            "allow_sim": self.config.allow_sim,
            "jwks": self.tokens.jwks(),
            "hub": self.config.hub_url,
        }


def _kek(home: Path) -> KeyEncryptionKey:
    """CONFIDE_KEK (``ID:64 hex``) if set, else the 0600 file, created on first start."""
    text = os.environ.get("CONFIDE_KEK")
    if text:
        return KeyEncryptionKey.parse(text, "CONFIDE_KEK")
    return KeyEncryptionKey.load_or_create(home / "kek")


def _previous_keks() -> tuple[KeyEncryptionKey, ...]:
    """CONFIDE_KEK_PREVIOUS: comma-separated ``ID:64 hex`` keys still needed to open
    secrets sealed before a rotation (new secrets are sealed under CONFIDE_KEK)."""
    text = os.environ.get("CONFIDE_KEK_PREVIOUS", "")
    return tuple(
        KeyEncryptionKey.parse(part.strip(), "CONFIDE_KEK_PREVIOUS")
        for part in text.split(",")
        if part.strip()
    )


def _check_kek(engine: Engine, keks: tuple[KeyEncryptionKey, ...]) -> None:
    """Refuse to serve a database whose secrets are sealed under another KEK.

    Replicas behind one database must share one KEK (CONFIDE_KEK, or the same file); a
    host that made its own would accept new secrets that no other replica can open, and
    fail every release of the existing ones. Better to stop at start, saying so.
    """
    with reading(engine) as connection:
        found = connection.execute(select(secrets_table.c.kek_id).distinct()).scalars().all()
    foreign = sorted(set(found) - {kek.kek_id for kek in keks})
    if foreign:
        raise ConfideError(
            f"this database holds secrets sealed under KEK id(s) {', '.join(foreign)}, but this "
            f"sms has KEK id(s) {', '.join(k.kek_id for k in keks)}: every replica must use the "
            f"same key-encryption key (set CONFIDE_KEK, or copy the kek file; after a rotation, "
            f"list the old one in CONFIDE_KEK_PREVIOUS)"
        )
