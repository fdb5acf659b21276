"""The result statement: what the enclave signs about a task's result (DESIGN "Results").

Encoding (what the enclave's Ed25519 key signs, ``message()``)::

    lp("confide-result-v2") || lp(task id) || lp(order hash) || lp(requester) || lp(worker)
      || lp(token jti) || lp(config hash) || lp(dataset checksum)
      || lp(list(input file digests)) || lp(ciphertext digest) || lp(result digest)
      || lp(outcome) || lp(logs digest) || lp(list(output tags))

with every text UTF-8 and ``list(xs) = u32(len(xs)) || lp(x) ...``; an absent dataset
checksum is the empty string. ``outcome`` is ``"completed"`` or ``"failed:<CAUSE>"`` (a
failed task's result holds only ``error.txt``: it must never pass for a completed one);
``logs digest`` is the SHA-256 (hex) of the sealed logs blob, or the empty string when the
task has no logs. The signature is ``EnclaveKeys.signing.sign(label, rest)``, i.e. Ed25519
over exactly ``message()`` (confide.crypto.signing prefixes ``lp(label)``). The label is
the statement's own (v2 since ``outcome`` and ``logs digest`` were added); the HPKE infos
of :mod:`confide.results.sealed` keep theirs.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from confide.crypto.encoding import lp
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import verify_signature
from confide.results.digest import ResultError

STATEMENT_LABEL = b"confide-result-v2"
COMPLETED = "completed"
FAILED_PREFIX = "failed:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_OUTCOME = re.compile(r"completed|failed:[A-Z][A-Z_]{0,63}")
_TEXT_MAX = 512
_LIST_MAX = 64


def _list(items: Sequence[str]) -> bytes:
    return struct.pack(">I", len(items)) + b"".join(lp(item.encode()) for item in items)


@dataclass(frozen=True)
class ResultStatement:
    task_id: str
    order_hash: str
    requester: str
    worker: str
    token_jti: str
    config_hash: str
    dataset_checksum: str
    input_digests: tuple[str, ...]
    ciphertext_digest: str
    result_digest: str
    outcome: str  # "completed" | "failed:<CAUSE>"
    logs_digest: str  # SHA-256 hex of the sealed logs blob; "" when none
    output_tags: tuple[str, ...] = ()

    @property
    def completed(self) -> bool:
        return self.outcome == COMPLETED

    @property
    def failure_cause(self) -> str | None:
        """The cause the enclave signed for a failed task (None when it completed)."""
        return self.outcome.removeprefix(FAILED_PREFIX) if not self.completed else None

    def _body(self) -> bytes:
        texts = (
            self.task_id,
            self.order_hash,
            self.requester,
            self.worker,
            self.token_jti,
            self.config_hash,
            self.dataset_checksum,
        )
        return (
            b"".join(lp(text.encode()) for text in texts)
            + lp(_list(self.input_digests))
            + lp(self.ciphertext_digest.encode())
            + lp(self.result_digest.encode())
            + lp(self.outcome.encode())
            + lp(self.logs_digest.encode())
            + lp(_list(self.output_tags))
        )

    def message(self) -> bytes:
        """The exact bytes the enclave's signature covers."""
        return lp(STATEMENT_LABEL) + self._body()

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        document["input_digests"] = list(self.input_digests)
        document["output_tags"] = list(self.output_tags)
        return document

    @classmethod
    def from_json(cls, data: Any) -> ResultStatement:
        """A statement from its JSON form; every field checked (ResultError naming it)."""
        if not isinstance(data, dict):
            raise ResultError("a result statement is a JSON object")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = sorted(set(names) - set(data) - {"output_tags"})
        if unknown or missing:
            raise ResultError(
                f"result statement: unknown fields {unknown}, missing fields {missing}"
            )
        values: dict[str, Any] = {}
        for name in names:
            value = data.get(name, [])
            if name in ("input_digests", "output_tags"):
                if (
                    not isinstance(value, list)
                    or len(value) > _LIST_MAX
                    or not all(isinstance(v, str) and len(v) <= _TEXT_MAX for v in value)
                ):
                    raise ResultError(f"result statement: {name} is not a list of texts")
                values[name] = tuple(value)
            elif not isinstance(value, str) or len(value) > _TEXT_MAX:
                raise ResultError(f"result statement: {name} is not a text")
            else:
                values[name] = value
        for name in ("ciphertext_digest", "result_digest"):
            if not _HEX64.fullmatch(values[name]):
                raise ResultError(f"result statement: {name} is not 64 lower-case hex")
        if values["logs_digest"] and not _HEX64.fullmatch(values["logs_digest"]):
            raise ResultError("result statement: logs_digest is not empty nor 64 lower-case hex")
        if not _OUTCOME.fullmatch(values["outcome"]):
            raise ResultError("result statement: outcome is not 'completed' nor 'failed:<CAUSE>'")
        return cls(**values)


def failed_outcome(cause: str) -> str:
    """The signed outcome of a task that failed with ``cause``."""
    outcome = FAILED_PREFIX + cause
    if not _OUTCOME.fullmatch(outcome):
        raise ValueError(f"{cause!r} is not a cause")
    return outcome


def sign_statement(statement: ResultStatement, keys: EnclaveKeys) -> str:
    """The enclave's Ed25519 signature over ``statement.message()``, hex."""
    return keys.signing.sign(STATEMENT_LABEL, statement._body()).hex()


def statement_signed_by(statement: ResultStatement, signature: str, public: bytes) -> bool:
    """Whether ``signature`` (hex) is ``public``'s Ed25519 signature of the statement."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        return False
    return verify_signature(public, STATEMENT_LABEL, statement._body(), raw)
