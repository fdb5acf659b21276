"""Offline verification of a downloaded result (DESIGN "Results"), each check named.

The root of trust is the requester's own signed order: its hash is the task id, it pins
the sms's token key (``sms_key``) and the app's measurement. From there: the sms's token
says which enclave key ran that measurement for this task; that key signed the statement;
the statement names the ciphertext digest (the kept zip) and the salted result digest
(the files inside it, and the files extracted from it).

Token times: a result is verified long after its token (1 h) expired, so expiry is not
checked against the verifier's clock. The token must have been issued within the task's
run (from ``created_at`` to its last recorded status, 5 minutes of slack each way) and
must not have expired when the task reached COMPUTING (the hub's ``times``; the hub is
trusted for these times only). Its lifetime is at most 24 h and it is never issued in the
verifier's future.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confide.attestation.token import MAX_LIFETIME_SECONDS, PROFILE
from confide.attestation.verifier import AFFIRMING, WARNING
from confide.crypto.result_key import result_key_sha256
from confide.crypto.tokens import public_jwk, verify_token_signature
from confide.results.digest import SALT_NAME, ResultError, digest_of, parse_salt
from confide.results.opening import OpenedResult, read_result
from confide.results.sealed import is_encrypted, load_private_key, public_of, sha256_path
from confide.results.statement import COMPLETED, ResultStatement, statement_signed_by
from confide.sms.tasks import TaskOrder

SLACK = 300
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
ORDER_OF_CHECKS = (
    "order",
    "document",
    "token-signature",
    "token-claims",
    "token-time",
    "token-status",
    "measurement",
    "statement-signature",
    "statement-binding",
    "outcome",
    "ciphertext-digest",
    "encryption",
    "result-digest",
    "extracted-files",
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | failed | skipped
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    task_id: str
    checks: tuple[Check, ...]
    simulation: bool = False
    tee: str | None = None
    result_digest: str | None = None  # the signed, salted one (when the statement parsed)
    outcome: str | None = None  # the signed outcome, "completed" | "failed:<CAUSE>"

    @property
    def task_failed(self) -> bool:
        """The enclave signed that the task failed (the result is its error.txt)."""
        return self.outcome is not None and self.outcome != COMPLETED

    @property
    def ok(self) -> bool:
        return all(check.status != FAILED for check in self.checks)

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if c.status == FAILED), None)

    def reason(self) -> str:
        failed = self.failed
        return "" if failed is None else f"{failed.name}: {failed.detail}"

    def to_json(self) -> dict[str, Any]:
        failed = self.failed
        return {
            "task": self.task_id,
            "ok": self.ok,
            "simulation": self.simulation,
            "tee": self.tee,
            "result_digest": self.result_digest,
            "outcome": self.outcome,
            "failed": None if failed is None else failed.name,
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks
            ],
        }


# What must hold before a byte of the archive is decrypted or an extracted file read.
_AUTHENTIC = (
    "token-signature",
    "token-claims",
    "token-status",
    "statement-signature",
    "statement-binding",
    "ciphertext-digest",
)


class SkipCheckError(Exception):
    """A check that cannot run with what is at hand (not a failure)."""


class _Verification:
    """One verification: the checks run in order, each method one named check."""

    def __init__(
        self,
        task: str,
        document: Mapping[str, Any],
        stored: Path,
        work: Path,
        *,
        now: int,
        allow_sim: bool,
        key_path: Path | None,
        extracted_dir: Path | None,
        extracted_names: Sequence[str] | None,
    ) -> None:
        self.task, self.document, self.stored, self.work = task, document, stored, work
        self.now, self.allow_sim, self.key_path = now, allow_sim, key_path
        self.extracted_dir, self.extracted_names = extracted_dir, extracted_names
        self.checks: list[Check] = []
        self.order: TaskOrder | None = None
        self.result: dict[str, Any] = {}
        self.statement: ResultStatement | None = None
        self.claims: dict[str, Any] = {}
        self.encrypted = False
        self.opened: OpenedResult | None = None

    def run_all(self, until: str | None = None) -> None:
        steps: list[tuple[str, Callable[[], str], tuple[str, ...]]] = [
            ("order", self.check_order, ()),
            ("document", self.check_document, ()),
            ("token-signature", self.check_token_signature, ("order", "document")),
            ("token-claims", self.check_token_claims, ("token-signature",)),
            ("token-time", self.check_token_time, ("token-signature",)),
            ("token-status", self.check_token_status, ("token-signature",)),
            ("measurement", self.check_measurement, ("token-signature",)),
            ("statement-signature", self.check_statement_signature, ("token-claims",)),
            ("statement-binding", self.check_binding, ("token-signature",)),
            ("outcome", self.check_outcome, ("statement-signature", "statement-binding")),
            ("ciphertext-digest", self.check_ciphertext, ("document",)),
            ("encryption", self.check_encryption, ("order",)),
            # nothing is decrypted nor extracted before the statement is the attested
            # enclave's, for this order, and names these very bytes
            ("result-digest", self.check_result_digest, (*_AUTHENTIC, "encryption")),
            ("extracted-files", self.check_extracted, _AUTHENTIC),
        ]
        if until is not None:  # the checks up to ``until`` only
            steps = steps[: [step[0] for step in steps].index(until) + 1]
        passed: set[str] = set()
        for name, test, needs in steps:
            if not all(n in passed for n in needs):
                self.checks.append(Check(name, SKIPPED, "an earlier check failed"))
                continue
            try:
                detail = test()
            except SkipCheckError as skip:
                self.checks.append(Check(name, SKIPPED, str(skip)))
                continue
            except Exception as exc:  # any error fails this check, named; never a crash
                self.checks.append(Check(name, FAILED, str(exc) or type(exc).__name__))
                continue
            self.checks.append(Check(name, OK, detail))
            passed.add(name)

    # Each check below runs only once the ones it needs passed (run_all): the
    # attributes it reads are then set.

    def _order(self) -> TaskOrder:
        assert self.order is not None  # noqa: S101 - see run_all
        return self.order

    def _statement(self) -> ResultStatement:
        assert self.statement is not None  # noqa: S101 - see run_all
        return self.statement

    def check_order(self) -> str:
        order = TaskOrder.from_json(self.document.get("order"))
        order.check_signature(str(self.document.get("signature", "")))
        if order.task_id() != self.task:
            raise ResultError(f"the order is task {order.task_id()}, not {self.task}")
        self.order = order
        return f"signed by its requester {order.requester}"

    def check_document(self) -> str:
        result = self.document.get("result")
        if not isinstance(result, dict):
            raise ResultError("the document holds no result")
        self.result = result
        self.statement = ResultStatement.from_json(result.get("statement"))
        for name in ("signature", "token"):
            if not isinstance(result.get(name), str) or not result[name]:
                raise ResultError(f"the result has no {name}")
        return "statement, signature and token present"

    def check_token_signature(self) -> str:
        sms_key = self._order().sms_key
        jwks = {"keys": [public_jwk(bytes.fromhex(sms_key))]}
        self.claims = verify_token_signature(str(self.result["token"]), jwks)
        return f"signed by the order's sms key {sms_key[:16]}…"

    def check_token_claims(self) -> str:
        claims, order, task = self.claims, self._order(), self.task
        issuer = claims.get("iss")
        wrong = []
        if claims.get("eat_profile") != PROFILE:
            wrong.append("eat_profile")
        if not isinstance(issuer, str) or not issuer.startswith("sms-"):
            wrong.append(f"iss {issuer!r}")
        if claims.get("aud") != f"task:{task}":
            wrong.append(f"aud {claims.get('aud')!r}")
        if claims.get("subject") != task:
            wrong.append(f"task {claims.get('subject')!r}")
        if claims.get("tee") not in order.tee:
            wrong.append(f"tee {claims.get('tee')!r} (the order allows {list(order.tee)})")
        if claims.get("debug") is not False:
            wrong.append("debug enclave")
        keys = claims.get("enclave_keys")
        if not isinstance(keys, dict) or not isinstance(keys.get("ed25519"), str):
            wrong.append("enclave_keys")
        if wrong:
            raise ResultError("token " + ", ".join(wrong))
        return f"iss {issuer}, aud task:{task[:10]}…, tee {claims.get('tee')}"

    def check_token_time(self) -> str:
        return _token_time(self.claims, self.document, self.now)

    def check_token_status(self) -> str:
        status, tee = self.claims.get("status"), self.claims.get("tee")
        if status not in (AFFIRMING, WARNING):
            raise ResultError(f"token status {status!r} is not acceptable")
        if status == WARNING or tee == "sim":
            what = "a simulation" if tee == "sim" else f"a {status!r} attestation"
            if not self.allow_sim:
                raise ResultError(
                    f"the result comes from {what}, which has no hardware protection: "
                    f"pass --allow-sim to accept it"
                )
            return f"{status} ({what}: no hardware protection), accepted with --allow-sim"
        return str(status)

    def check_measurement(self) -> str:
        expected = str(self._order().app_measurement)
        if self.claims.get("measurement") != expected:
            raise ResultError(
                f"the token names measurement {self.claims.get('measurement')!r}, the order "
                f"{expected}"
            )
        return expected

    def check_statement_signature(self) -> str:
        public = bytes.fromhex(self.claims["enclave_keys"]["ed25519"])
        if not statement_signed_by(self._statement(), str(self.result["signature"]), public):
            raise ResultError("the statement is not signed by the enclave key the token names")
        return f"enclave key {public.hex()[:16]}…"

    def check_binding(self) -> str:
        return _binding(self._statement(), self._order(), self.claims, self.task)

    def check_outcome(self) -> str:
        """The signed outcome agrees with the task's status: a COMPLETED task (or one whose
        status is not told) needs "completed"; a FAILED one's error result says why."""
        statement, status = self._statement(), self.document.get("status")
        if status == "FAILED":
            if statement.completed:
                raise ResultError("the enclave signed a completed result, the hub says FAILED")
            return f"the task failed: {statement.failure_cause} (signed by the enclave)"
        if not statement.completed:
            raise ResultError(
                f"the enclave signed {statement.outcome!r}: this result is a failed task's "
                f"error.txt, not a completed task's result"
                + (f" (the hub says {status})" if status else "")
            )
        return "completed"

    def check_ciphertext(self) -> str:
        actual = sha256_path(self.stored)
        if actual != self._statement().ciphertext_digest:
            raise ResultError(f"the kept zip's SHA-256 {actual} is not the signed one")
        blob = self.result.get("blob")
        if blob is not None and blob != actual:
            raise ResultError(f"the hub names blob {blob}, the kept zip is {actual}")
        return actual

    def check_encryption(self) -> str:
        self.encrypted = is_encrypted(self.stored)
        if self.encrypted != self._order().encrypt_result:
            wanted = "encrypted" if self._order().encrypt_result else "not encrypted"
            raise ResultError(f"the order asked for a result {wanted}")
        return "encrypted to your result key" if self.encrypted else "not encrypted (as ordered)"

    def check_result_digest(self) -> str:
        if self.encrypted:
            key_path = self.key_path
            if key_path is None or not key_path.exists():
                raise SkipCheckError(
                    f"no result key at {key_path}: the files inside are not checked"
                )
            pinned = self._order().result_key
            if pinned and result_key_sha256(public_of(load_private_key(key_path))) != pinned:
                raise ResultError(f"the result key at {key_path} is not the one the order pinned")
        work = self.work / "archive"
        work.mkdir()
        self.opened = read_result(
            self.stored, work, task_id=self.task, result_private_key_path=self.key_path
        )
        if self.opened.result_digest != self._statement().result_digest:
            raise ResultError("the archive's files do not match the salted digest signed")
        return f"{len(self.opened.names) - 1} files match the signed salted digest"

    def check_extracted(self) -> str:
        directory = self.extracted_dir
        if directory is None:
            raise SkipCheckError("no directory given")
        opened = self.opened
        listed = list(opened.names) if opened is not None else list(self.extracted_names or [])
        files = [n for n in listed if n != SALT_NAME]
        if not listed or not any((directory / n).exists() for n in listed):
            raise SkipCheckError(f"no extracted files in {directory}")
        salt = parse_salt((directory / SALT_NAME).read_bytes())
        if digest_of(directory, files, salt) == self._statement().result_digest:
            return f"{len(files)} files in {directory} match the signed digest"
        if opened is not None:  # name the file that changed
            for name in files:
                if _sha(directory / name) != _sha(self.work / "archive" / name):
                    raise ResultError(
                        f"{directory / name} differs from the result the enclave signed"
                    )
        raise ResultError(f"the files in {directory} differ from the result the enclave signed")


def verify(
    task_id: str,
    document: Mapping[str, Any],
    stored: Path,
    *,
    now: int,
    allow_sim: bool = False,
    result_private_key_path: Path | None = None,
    extracted_dir: Path | None = None,
    extracted_names: Sequence[str] | None = None,
) -> Verdict:
    """Verify the kept zip ``stored`` against the result ``document`` (the hub's task view,
    or what ``task show --download`` saved: ``order``, ``signature``, ``result``,
    ``times``, ``created_at``) for ``task_id``; with ``extracted_dir`` also the files
    extracted there (their names from the archive when it opens here, else
    ``extracted_names``). Every check is reported, named; ``Verdict.ok`` when none failed."""
    task = task_id.lower()
    with tempfile.TemporaryDirectory(prefix="confide-verify-") as work:
        run = _Verification(
            task,
            document,
            stored,
            Path(work),
            now=now,
            allow_sim=allow_sim,
            key_path=result_private_key_path,
            extracted_dir=extracted_dir,
            extracted_names=extracted_names,
        )
        run.run_all()
    return _verdict(task, run)


def verify_statement(
    task_id: str, document: Mapping[str, Any], *, now: int, allow_sim: bool = False
) -> tuple[Verdict, ResultStatement | None]:
    """The checks of :func:`verify` up to ``outcome`` only (the token, the statement's
    signature and binding, the outcome), no zip needed: what ``task debug --logs`` needs
    before it trusts the statement's ``logs_digest``. The statement once they all pass."""
    task = task_id.lower()
    run = _Verification(
        task,
        document,
        Path(),
        Path(),
        now=now,
        allow_sim=allow_sim,
        key_path=None,
        extracted_dir=None,
        extracted_names=None,
    )
    run.run_all(until="outcome")
    verdict = _verdict(task, run)
    passed = verdict.ok and any(c.name == "outcome" and c.status == OK for c in verdict.checks)
    return verdict, run.statement if passed else None


def _verdict(task: str, run: _Verification) -> Verdict:
    tee = run.claims.get("tee") if run.claims else None
    statement = run.statement
    return Verdict(
        task,
        tuple(run.checks),
        simulation=tee == "sim",
        tee=tee if isinstance(tee, str) else None,
        result_digest=None if statement is None else statement.result_digest,
        outcome=None if statement is None else statement.outcome,
    )


def _token_time(claims: Mapping[str, Any], document: Mapping[str, Any], now: int) -> str:
    issued, expiry = claims.get("iat"), claims.get("exp")
    if type(issued) is not int or type(expiry) is not int or expiry <= issued:
        raise ResultError("token has no valid iat/exp")
    if expiry - issued > MAX_LIFETIME_SECONDS:
        raise ResultError("token lives longer than any confide issues")
    if issued > now + SLACK:
        raise ResultError("token issued in the future")
    times = document.get("times") if isinstance(document.get("times"), dict) else {}
    assert isinstance(times, dict)  # noqa: S101 - narrowed above
    stamps = [v for v in times.values() if type(v) is int]
    created = document.get("created_at")
    if type(created) is int and issued < created - SLACK:
        raise ResultError("token issued before the task was created")
    if stamps and issued > max(stamps) + SLACK:
        raise ResultError("token issued after the task's last status")
    computing = times.get("COMPUTING")
    if type(computing) is int and computing > expiry + SLACK:
        raise ResultError("token had expired when the task started computing")
    return "issued within the task's run" if stamps else "iat/exp well-formed (no task times)"


def _binding(
    statement: ResultStatement, order: TaskOrder, claims: Mapping[str, Any], task: str
) -> str:
    expected = {
        "task_id": task,
        "order_hash": order.task_id(),
        "requester": order.requester,
        "dataset_checksum": order.dataset_checksum or "",
        "input_digests": tuple(digest for _url, digest in order.input_files),
        "token_jti": claims.get("jti"),
        "config_hash": claims.get("config_hash"),
        "worker": claims.get("worker"),
    }
    wrong = sorted(name for name, value in expected.items() if getattr(statement, name) != value)
    if wrong:
        raise ResultError(f"the statement's {', '.join(wrong)} differ from the order/token")
    return "task, order hash, requester, dataset, inputs, token and worker match"


def _sha(path: Path) -> str:
    try:
        return sha256_path(path)
    except OSError:
        return ""
