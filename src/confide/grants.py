"""Storage grants: short-lived permission to read one blob, issued by the hub or the sms.

Knowing a blob's digest is not enough to read it (docs/storage.md): a reader is the blob's
uploader (a signed request), or holds a grant. A grant names the digest, the grantee's
wallet address, the uploader it vouches for (the storage checks that this wallet did
upload the blob: a record or a report can name any digest, so a grant never reaches
further than what its named uploader could read itself), the issuer (the audience of the
service that signed it) and an expiry, and is signed with the issuer's Ed25519 signing
key; the storage accepts grants only from issuers whose keys it was configured to trust
(``--trust URL``, read from each one's ``/v1/info``), and only with a signed request from
the grantee, so a grant that leaks from a log is useless to anyone else.

Wire form (the ``X-Confide-Grant`` header): ``base64url(canonical JSON) "." base64url(sig)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confide.crypto.signing import SigningKey, verify_signature
from confide.crypto.wallet import normalise_address
from confide.errors import AuthError

GRANT_LABEL = b"confide-grant-v1"
GRANT_HEADER = "x-confide-grant"
MAX_GRANT_SECONDS = 3600  # a grant lives at most an hour
MAX_GRANT_CHARS = 2048
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"digest", "grantee", "issuer", "expires_at", "uploader"}


@dataclass(frozen=True)
class Grant:
    digest: str  # the blob's SHA-256, 64 lower-case hex
    grantee: str  # lower-case wallet address
    issuer: str  # the issuing service's audience ("hub/<deployment>/<key hex>")
    expires_at: int  # unix seconds
    uploader: str  # lower-case wallet address that must have uploaded the blob

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "grantee": self.grantee,
            "issuer": self.issuer,
            "expires_at": self.expires_at,
            "uploader": self.uploader,
        }

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


def issue_grant(key: SigningKey, grant: Grant) -> str:
    """The wire form of ``grant`` signed with ``key`` (the issuer's signing key)."""
    if not _HEX64.fullmatch(grant.digest):
        raise AuthError("a grant names a blob by its SHA-256 (64 lower-case hex)")
    signature = key.sign(GRANT_LABEL, grant.canonical())
    return f"{_b64(grant.canonical())}.{_b64(signature)}"


def check_grant(
    text: str,
    *,
    issuers: Mapping[str, bytes],
    digest: str,
    grantee: str,
    now: float,
) -> Grant:
    """The grant ``text`` if it is signed by one of ``issuers`` (audience -> Ed25519
    public key), names ``digest`` and ``grantee`` and has not expired; AuthError naming
    the first failed check otherwise. (Its ``uploader`` is the storage's to check.)"""
    if len(text) > MAX_GRANT_CHARS or text.count(".") != 1:
        raise AuthError("the grant is malformed")
    body_text, signature_text = text.split(".")
    try:
        body, signature = _unb64(body_text), _unb64(signature_text)
        data = json.loads(body)
    except (ValueError, binascii.Error):
        raise AuthError("the grant is malformed") from None
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise AuthError("the grant is malformed")
    try:
        grant = Grant(
            digest=str(data["digest"]),
            grantee=normalise_address(str(data["grantee"])),
            issuer=str(data["issuer"]),
            expires_at=int(data["expires_at"]),
            uploader=normalise_address(str(data["uploader"])),
        )
    except (AuthError, TypeError, ValueError):
        raise AuthError("the grant is malformed") from None
    public = issuers.get(grant.issuer)
    if public is None:
        raise AuthError(f"the grant's issuer {grant.issuer} is not one this storage trusts")
    if grant.canonical() != body or not verify_signature(public, GRANT_LABEL, body, signature):
        raise AuthError("the grant's signature does not verify")
    if grant.digest != digest:
        raise AuthError("the grant is for another blob")
    if grant.grantee != normalise_address(grantee):
        raise AuthError(f"the grant is for {grant.grantee}, not for the signer")
    if grant.expires_at <= now:
        raise AuthError("the grant has expired")
    if grant.expires_at > now + MAX_GRANT_SECONDS + 300:
        raise AuthError("the grant lives longer than a grant may")
    return grant


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
