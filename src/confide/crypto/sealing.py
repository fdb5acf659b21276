"""Sealing configuration to an attested enclave: HPKE (RFC 9180), base mode.

The sms seals an enclave's configuration (its secrets) to the X25519 key the enclave
made inside the TEE and bound into its evidence; ``info`` binds the sms, the session or
task, the service and the attestation nonce, so a sealed blob opens only in that
enclave, for that context. Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
(The ML-KEM-768+X25519 hybrid is offered by the library; moving to it changes the
enclave's key type, hence the report data, so it is a protocol version of its own.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from confide.crypto.encoding import lp
from confide.crypto.keys import Redacted
from confide.crypto.signing import SigningKey
from confide.errors import AttestationError

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO_LABEL = b"confide-sealed-config-v1"
SEALED_CONFIG_LABEL = b"confide-sealed-config-sig-v1"  # the sms's signature over a sealed blob


def sealing_info(*, sms_id: str, subject: str, service: str, nonce: bytes) -> bytes:
    """HPKE ``info``: what the sealed configuration is bound to."""
    fields = (_INFO_LABEL, sms_id.encode(), subject.encode(), service.encode(), nonce)
    return b"".join(lp(field) for field in fields)


def session_subject(owner: str, name: str, digest: str) -> str:
    """What attestation binds for a session (report data, HPKE info, token, tag reports):
    ``owner/name@hash`` — a hash alone does not say whose session it is."""
    return f"{owner.lower()}/{name}@{digest}"


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def config_hash(config: Any) -> str:
    """The hash a token names for a sealed configuration: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(config)).hexdigest()


def sealed_document(config: Any) -> tuple[bytes, str]:
    """A configuration's canonical JSON and :func:`config_hash` of it, made once."""
    encoded = canonical_json(config)
    return encoded, hashlib.sha256(encoded).hexdigest()


def sealed_payload(config_json: bytes, token: str) -> bytes:
    """What is sealed to an enclave: ``canonical_json({"config": config, "token": token})``,
    with the configuration's canonical JSON (``config_json``) made once, for its hash too."""
    return b'{"config":' + config_json + b',"token":' + canonical_json(token) + b"}"


def signed_sealed_message(info: bytes, sealed: bytes) -> bytes:
    """What the sms signs for a sealed configuration: the HPKE context and the sealed
    bytes, length-prefixed (so the signature cannot be moved to another context)."""
    return lp(info) + lp(sealed)


class EnclaveKeys(Redacted):
    """The two ephemeral keys an enclave makes inside the TEE: X25519 to receive sealed
    configuration, Ed25519 to sign results and tag updates. They attest once: the nonce
    reaches the enclave through the host, which could answer a second attestation with
    keys used before by a recorded old challenge and answer (a stale configuration, an
    old expected tag); keys made for each attestation cannot open an old answer."""

    __slots__ = ("_attested", "_x25519", "signing")

    def __init__(self, x25519: X25519PrivateKey, signing: SigningKey) -> None:
        self._x25519 = x25519
        self.signing = signing
        self._attested = False

    def use_for_attestation(self) -> None:
        """Mark the keys used by an attestation; AttestationError if they were before."""
        if self._attested:
            raise AttestationError(
                "these enclave keys attested before: make new keys for each attestation "
                "(the host could answer reused keys with an old, recorded configuration)"
            )
        self._attested = True

    @classmethod
    def generate(cls) -> EnclaveKeys:
        return cls(X25519PrivateKey.generate(), SigningKey.generate())

    @property
    def x25519_public(self) -> bytes:
        return self._x25519.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def ed25519_public(self) -> bytes:
        return self.signing.public_bytes()

    def open_sealed(self, sealed: bytes, info: bytes) -> bytes:
        """Open a configuration sealed to this enclave; AttestationError if it is not."""
        try:
            plaintext = open_with(sealed, self._x25519, info)
        except ValueError:
            raise AttestationError(
                "sealed configuration does not open: not for this enclave or context"
            ) from None
        return plaintext


def seal_to(plaintext: bytes, x25519_public: bytes, info: bytes) -> bytes:
    """HPKE-seal ``plaintext`` to any X25519 public key (an enclave's, a requester's
    result key): ``enc (32 bytes) || ciphertext``. ValueError for a malformed key."""
    public = X25519PublicKey.from_public_bytes(x25519_public)
    sealed: bytes = _SUITE.encrypt(plaintext, public, info=info)
    return sealed


def open_with(sealed: bytes, private: X25519PrivateKey, info: bytes) -> bytes:
    """Open what :func:`seal_to` sealed to ``private``'s public half, for this ``info``;
    ValueError when it does not open (another key, another context, a changed byte)."""
    try:
        plaintext: bytes = _SUITE.decrypt(sealed, private, info=info)
    except (InvalidTag, ValueError):
        raise ValueError("the sealed bytes do not open with this key and context") from None
    return plaintext


def seal_for_enclave(plaintext: bytes, enclave_x25519_public: bytes, info: bytes) -> bytes:
    """HPKE-seal ``plaintext`` to the enclave's key: ``enc (32 bytes) || ciphertext``."""
    try:
        return seal_to(plaintext, enclave_x25519_public, info)
    except ValueError:
        raise AttestationError("the enclave's X25519 key is malformed") from None
