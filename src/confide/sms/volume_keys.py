"""A session volume's key, released to a wallet that may read the session.

As in SCONE's CAS, whoever may read a session may decrypt its volumes (``confide volume
pull``): the reader names a one-time X25519 public key in a signed request, and gets the
current version's key sealed to it, with the tag it opens and the blob that holds it,
signed by the sms (:mod:`confide.crypto.volume_release`), and a storage grant for that
blob. Every release is audited. No other way takes a volume key to a wallet: an enclave
gets it only inside its sealed configuration, after attestation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from confide.crypto.volume_release import RELEASE_LABEL, VolumeRelease, seal_release
from confide.db import audit
from confide.db.engine import reading
from confide.errors import ConfideError
from confide.grants import Grant
from confide.sms.secrets import SecretNotFoundError
from confide.sms.service import Sms
from confide.sms.sessions import volume_key_ref
from confide.sms.volumes import TagRecord, latest_tag

CONSISTENT_READ_TRIES = 5
GRANT_SECONDS = 600  # the storage grant that comes with a key: long enough for a download
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


class VolumeKeyNotFoundError(ConfideError):
    """The volume has no version, or no key, yet (HTTP 404)."""


class VolumeKeyBusyError(ConfideError):
    """The volume's version kept changing while its key was read (HTTP 503)."""


class VolumeKeyRequestError(ConfideError):
    """A malformed request: an unknown volume, a public key that is not X25519 (400)."""


@dataclass(frozen=True)
class ReleasedVolumeKey:
    release: VolumeRelease
    sealed: bytes
    signature: bytes
    grant: str | None  # for the blob, when the version names one its uploader stored

    def to_json(self) -> dict[str, Any]:
        return {
            "volume": self.release.volume,
            "tag": self.release.tag,
            "blob": self.release.blob or None,
            "sealed_key": self.sealed.hex(),
            "signature": self.signature.hex(),
            "grant": self.grant,
        }


class VolumeKeys:
    def __init__(self, sms: Sms) -> None:
        self.sms = sms

    def release(
        self,
        *,
        caller: str,
        owner: str,
        session: str,
        volume: str,
        reader_public: bytes,
        now: int,
    ) -> ReleasedVolumeKey:
        head = self.sms.sessions.current(caller, owner, session)  # read access, or refused
        if volume not in {v["name"] for v in head.document["volumes"]}:
            raise VolumeKeyRequestError(f"session {owner}/{session} has no volume {volume!r}")
        row, key = self._current(owner, session, volume)
        release = VolumeRelease(
            self.sms.audience, owner, session, volume, row.tag, row.blob_digest, reader_public
        )
        try:
            sealed = seal_release(release, key)
        except ValueError:
            raise VolumeKeyRequestError("public_key is not an X25519 public key") from None
        signature = self.sms.tokens.sign_blob(RELEASE_LABEL, release.message(sealed))
        grant = None
        if row.blob_digest and _ADDRESS.fullmatch(row.reported_by):
            grant = self.sms.tokens.grant(
                Grant(
                    row.blob_digest, caller, self.sms.audience, now + GRANT_SECONDS, row.reported_by
                )
            )
        with self.sms.engine.begin() as connection:
            audit.append(
                connection,
                at=now,
                actor=caller,
                action="volume.key",
                subject=f"{owner}/{session}/{volume}",
                detail={
                    "tag": row.tag,
                    "blob": row.blob_digest or None,
                    "reader_public": reader_public.hex(),
                },
            )
        return ReleasedVolumeKey(release, sealed, signature, grant)

    def _current(self, owner: str, session: str, volume: str) -> tuple[TagRecord, bytes]:
        """The current version and its key, as one consistent pair. A push writes both in
        one transaction, but they are two reads here: the tag is read again after the
        key, and a push that committed in between (the tag moved) means reading again,
        so the key released is always the one of the tag signed with it."""
        ref = volume_key_ref(owner, session, volume)
        for _ in range(CONSISTENT_READ_TRIES):
            with reading(self.sms.engine) as connection:
                row = latest_tag(connection, owner, session, volume)
                if row is None:
                    raise VolumeKeyNotFoundError(
                        f"volume {volume!r} of session {owner}/{session} has no version yet "
                        f"(push one with `confide volume push`, or run the session's service)"
                    )
                try:
                    key = self.sms.secrets.latest(ref, connection)[1]
                except SecretNotFoundError:
                    raise VolumeKeyNotFoundError(
                        f"volume {volume!r} of session {owner}/{session} has no key yet"
                    ) from None
                if latest_tag(connection, owner, session, volume) == row:
                    return row, key
        raise VolumeKeyBusyError(
            f"volume {volume!r} of session {owner}/{session} kept changing while its key "
            f"was read: try again"
        )
