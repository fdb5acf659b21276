"""Task results: the salted result digest, the stored (encrypted) zip, sealed logs, the
enclave's signed statement, safe opening, and offline verification (docs/results.md)."""

from confide.results.digest import SALT_NAME, ResultError, result_digest
from confide.results.opening import OpenedResult, open_result
from confide.results.sealed import build_result, open_logs, seal_logs
from confide.results.statement import ResultStatement, sign_statement, statement_signed_by
from confide.results.verify import Check, Verdict, verify

__all__ = [
    "SALT_NAME",
    "Check",
    "OpenedResult",
    "ResultError",
    "ResultStatement",
    "Verdict",
    "build_result",
    "open_logs",
    "open_result",
    "result_digest",
    "seal_logs",
    "sign_statement",
    "statement_signed_by",
    "verify",
]
