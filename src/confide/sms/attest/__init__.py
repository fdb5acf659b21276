"""Attestation and configuration delivery: the only way a secret leaves the sms.

An enclave asks for a challenge (a nonce row, single use, 60 s), makes evidence whose
report data binds the nonce, its two public keys, this sms, the session hash or task id,
the service and the worker (docs/attestation.md, "Report data"), and posts it. The sms judges
it by the effective policy — the session's or the task order's, intersected with the
release policy of every secret it would release — and only then builds the configuration,
seals it with HPKE to the enclave's X25519 key, signs the sealed blob with its token key
and records the grant, the released secrets (by version) and, for a task, the lease it
used, in one transaction with the audit entry. A refusal is audited with its reasons and
says them (unless it names a session version or task that does not exist: then only the
caller is told); nothing secret is in a refusal or a log.

:class:`Attestations` (``service.py``) is the front; the request and its checks are in
``request.py``, planning in ``plan.py``, the task-order validator in ``orders.py``,
sealing and the grant's transaction in ``record.py`` and every statement in
``queries.py``.
"""

from confide.sms.attest.plan import CONFIG_FORMAT
from confide.sms.attest.queries import current_tags
from confide.sms.attest.record import Grant, Outcome, PendingGrant
from confide.sms.attest.request import (
    MAX_EVIDENCE_BYTES,
    AttestationRefusedError,
    AttestRequest,
    AttestRequestError,
    SessionTarget,
    TargetNotFoundError,
    TaskTarget,
    hex_field,
)
from confide.sms.attest.service import Attestations

__all__ = [
    "CONFIG_FORMAT",
    "MAX_EVIDENCE_BYTES",
    "AttestRequest",
    "AttestRequestError",
    "AttestationRefusedError",
    "Attestations",
    "Grant",
    "Outcome",
    "PendingGrant",
    "SessionTarget",
    "TargetNotFoundError",
    "TaskTarget",
    "current_tags",
    "hex_field",
]
