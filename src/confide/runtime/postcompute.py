"""Post-compute: computed.json checked, the result archived (encrypted for the requester
unless the order says not to), the logs sealed, the statement signed.

``computed.json`` must be a regular file in ``IEXEC_OUT`` naming, with
``deterministic-output-path``, a path that exists and lies inside ``IEXEC_OUT`` (symlinks
resolved), or carrying ``callback-data``. The result is the whole of ``IEXEC_OUT``; its
salted digest is computed here and signed, with the ciphertext digest, the outcome
(``completed`` or ``failed:<CAUSE>``) and the digest of the sealed logs, by the enclave's
Ed25519 key (:mod:`confide.results`). Everything plaintext stays on the runtime's own
tmpfs: only the stored zip (ciphertext unless the order opted out) and the sealed logs
reach the job directory the worker reads.

Logs reach the requester only when the configuration the sms released says so
(``app_logs``: the app record's ``logs``, which its owner signed); job.json, which the
worker writes, has no say.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from confide.errors import ConfideError
from confide.results.digest import result_digest
from confide.results.sealed import build_result, seal_logs
from confide.results.statement import COMPLETED, ResultStatement, failed_outcome, sign_statement
from confide.runtime.attest import Attested
from confide.runtime.compute import OUT_TARGET
from confide.runtime.job import Job
from confide.runtime.stages import (
    ERROR_FILE,
    LOGS_FILE,
    POST_COMPUTE_FAILED,
    RESULT_FILE,
    Outcome,
    Redactor,
    TaskFailure,
    write_out,
)
from confide.sandbox import Finished

COMPUTED = "computed.json"
MAX_COMPUTED_BYTES = 64 * 1024
SALT_BYTES = 32
TAIL_BYTES = 100_000


@dataclass(frozen=True)
class Built:
    result_digest: str
    ciphertext_digest: str


def check_computed(out_dir: Path) -> None:
    """computed.json as iExec defines it; TaskFailure(POST_COMPUTE_FAILED) saying why."""
    path = out_dir / COMPUTED
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise TaskFailure(
            POST_COMPUTE_FAILED, f"the app wrote no {COMPUTED} in IEXEC_OUT"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise TaskFailure(POST_COMPUTE_FAILED, f"{COMPUTED} is not a regular file")
    if info.st_size > MAX_COMPUTED_BYTES:
        raise TaskFailure(
            POST_COMPUTE_FAILED, f"{COMPUTED} is larger than {MAX_COMPUTED_BYTES} bytes"
        )
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise TaskFailure(POST_COMPUTE_FAILED, f"{COMPUTED} is not JSON") from None
    if not isinstance(document, dict):
        raise TaskFailure(POST_COMPUTE_FAILED, f"{COMPUTED} is not a JSON object")
    output = document.get("deterministic-output-path")
    if output is None:
        if "callback-data" in document:
            return
        raise TaskFailure(
            POST_COMPUTE_FAILED,
            f"{COMPUTED} names no deterministic-output-path (nor callback-data)",
        )
    if not isinstance(output, str) or not output or "\x00" in output:
        raise TaskFailure(POST_COMPUTE_FAILED, "deterministic-output-path is not a path")
    inside = _inside_out(output)
    if inside is None:
        raise TaskFailure(
            POST_COMPUTE_FAILED,
            f"deterministic-output-path {output[:200]!r} lies outside IEXEC_OUT ({OUT_TARGET})",
        )
    root = out_dir.resolve()
    target = Path(os.path.realpath(root / inside)) if inside else root
    if target != root and root not in target.parents:
        raise TaskFailure(
            POST_COMPUTE_FAILED,
            f"deterministic-output-path {output[:200]!r} resolves outside IEXEC_OUT",
        )
    if not target.exists():
        raise TaskFailure(
            POST_COMPUTE_FAILED, f"deterministic-output-path {output[:200]!r} does not exist"
        )


def _inside_out(output: str) -> str | None:
    """``output`` relative to IEXEC_OUT ("" for itself), or None when it leaves it."""
    if output.startswith("/"):
        normal = posixpath.normpath(output)
        if normal == OUT_TARGET:
            return ""
        if not normal.startswith(OUT_TARGET + "/"):
            return None
        return normal[len(OUT_TARGET) + 1 :]
    normal = posixpath.normpath(output)
    if normal == ".":
        return ""
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def build(out_dir: Path, job: Job, attested: Attested, work: Path) -> Built:
    """The stored zip in the job's out dir (built on the tmpfs, then moved); digests."""
    salt = os.urandom(SALT_BYTES)
    key = attested.result_public_key if job.order.encrypt_result else None
    staging = work / "stored"
    staging.mkdir(exist_ok=True)
    dest = staging / RESULT_FILE
    try:
        digest = result_digest(out_dir, salt)
        ciphertext = build_result(out_dir, dest, task_id=job.task, salt=salt, result_public_key=key)
    except (ConfideError, OSError) as exc:
        raise TaskFailure(POST_COMPUTE_FAILED, f"the result cannot be archived: {exc}") from None
    write_out(job.out, RESULT_FILE, dest)
    dest.unlink()
    return Built(digest, ciphertext)


def error_result(message: str, job: Job, attested: Attested, work: Path) -> Built:
    """A result that holds only error.txt (the failure, redacted), for the requester."""
    error_dir = work / "error-out"
    shutil.rmtree(error_dir, ignore_errors=True)
    error_dir.mkdir()
    (error_dir / ERROR_FILE).write_text(message + "\n")
    return build(error_dir, job, attested, work)


def sign(job: Job, attested: Attested, built: Built, outcome: Outcome) -> None:
    """The enclave's statement for ``built``, into the outcome (with the token). It
    says ``completed`` unless the outcome already failed (``outcome.cause``: then the
    result is the error result), and signs the sealed logs' digest (seal them first)."""
    claims = attested.claims
    statement = ResultStatement(
        task_id=job.task,
        order_hash=job.order.task_id(),
        requester=job.order.requester,
        worker=str(claims.get("worker", job.worker)),
        token_jti=str(claims.get("jti", "")),
        config_hash=attested.released.config_hash,
        dataset_checksum=job.order.dataset_checksum or "",
        input_digests=tuple(digest for _, digest in job.order.input_files),
        ciphertext_digest=built.ciphertext_digest,
        result_digest=built.result_digest,
        outcome=COMPLETED if outcome.cause is None else failed_outcome(outcome.cause),
        logs_digest=outcome.logs_digest if outcome.logs_file else "",
    )
    outcome.result_file = RESULT_FILE
    outcome.statement = statement.to_json()
    outcome.signature = sign_statement(statement, attested.keys)
    outcome.token = attested.released.token


def app_logs(finished: Finished, redactor: Redactor) -> bytes:
    """The last 100 kB of stdout and of stderr, every released secret value redacted; a
    cut one from its first whole line on (:meth:`Redactor.cut_start`)."""
    parts = []
    for name, tail in (("stdout", finished.stdout_tail), ("stderr", finished.stderr_tail)):
        cut = len(tail) >= TAIL_BYTES
        kept = redactor.bytes(tail[-TAIL_BYTES:], cut=cut)[-TAIL_BYTES:]  # marks may grow it
        note = " (last 100 kB, from a line start)" if cut else ""
        parts.append(
            f"--- {name}{note} ---\n".encode() + kept + (b"" if kept.endswith(b"\n") else b"\n")
        )
    return b"".join(parts)


def logs_allowed(attested: Attested) -> bool:
    """Whether the released configuration lets logs reach the requester (fail closed:
    only an explicit ``true`` from the sms)."""
    return attested.released.config.get("app_logs") is True


def deliver_logs(job: Job, attested: Attested, logs: bytes, outcome: Outcome) -> None:
    """Seal the logs to the requester's result key, when the app's owner allows logs
    (as the sms released it); ``outcome.logs_digest`` is then their SHA-256."""
    outcome.logs_file, outcome.logs_digest = None, ""
    key = attested.result_public_key
    if not logs_allowed(attested) or key is None:
        return
    try:
        sealed = seal_logs(logs, key, job.task)
    except ConfideError as exc:
        raise TaskFailure(POST_COMPUTE_FAILED, f"the logs cannot be sealed: {exc}") from None
    write_out(job.out, LOGS_FILE, sealed)
    outcome.logs_file, outcome.logs_digest = LOGS_FILE, hashlib.sha256(sealed).hexdigest()
