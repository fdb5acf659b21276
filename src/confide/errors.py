"""The exception tree: one root, one subtree per domain.

Every error confide raises on purpose is a ``ConfideError``; the CLI turns one into a
single ``error: …`` line and exit status 1. Messages never contain a key, a secret value
or decrypted bytes.
"""


class ConfideError(Exception):
    """Root of every error that confide raises deliberately."""


class KeyFileError(ConfideError):
    """A key file or key value is missing, malformed or unsafe."""


class VolumeError(ConfideError):
    """An encrypted volume cannot be created, read or written (not an integrity failure)."""


class VolumeIntegrityError(VolumeError):
    """Authentication of a volume failed: wrong key, tampering, truncation or rollback.

    All decryption and authentication failures raise this one class. The message names
    the volume and the file but does not say which check failed inside the cipher, so
    an attacker learns nothing to steer a forgery by. Named apart from
    ``sqlalchemy.exc.IntegrityError`` (a constraint violation, which the sms catches):
    one name for two unrelated failures invites the wrong import.
    """


class AttestationError(ConfideError):
    """Evidence could not be produced, parsed or verified."""


class PolicyError(AttestationError):
    """Evidence was verified but the policy refuses it; the message names the reason."""


class SecretError(ConfideError):
    """A secret is missing, malformed, too large, or may not be released."""


class SessionError(ConfideError):
    """A session document is invalid or conflicts with the stored one."""


class TaskError(ConfideError):
    """A task cannot be created, claimed or moved to the requested state."""


class StorageError(ConfideError):
    """A blob cannot be stored or fetched."""


class AuthError(ConfideError):
    """A request is unsigned, wrongly signed, stale, replayed or meant for another service."""


class WalletError(ConfideError):
    """A wallet keystore is missing, malformed, or its password is wrong."""
