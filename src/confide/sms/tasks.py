"""Task orders: what a requester signs so that the sms may release their secrets.

An order pins everything a release depends on (docs/architecture.md, "Secrets"): the app and the
measurement it must run as, the TEE policy, the secret mapping, the dataset, the result
key (by its SHA-256), the sms (by its token key) and the workerpool. It is signed with
EIP-191 over ``confide-task-order-v1\\n`` + its canonical JSON, and the task id is derived
from it, so the hub (untrusted) can neither forge an order nor run one order as two tasks.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from confide.attestation.measurement import Measurement
from confide.attestation.policy import TOLERATIONS
from confide.crypto.wallet import Wallet, normalise_address, recover_signer
from confide.errors import AuthError, ConfideError
from confide.names import NAME

ORDER_LABEL = "confide-task-order-v1\n"
_TASK_LABEL = b"confide-task-v1\n"
_FIELDS = {
    "requester",
    "app",
    "app_measurement",
    "tee",
    "tolerate",
    "ignore_advisories",
    "secrets",
    "dataset",
    "result_key",
    "sms_key",
    "workerpool",
    "salt",
    "dataset_checksum",
    "args",
    "input_files",
    "category",
    "valid_until",
    "max_attempts",
    "encrypt_result",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SALT = re.compile(r"[0-9a-f]{32}")
_NAME = NAME
_INDEX = re.compile(r"[1-9][0-9]{0,3}", re.ASCII)  # one spelling per index: no "01", no "²"
MAX_MAPPED_SECRETS = 64
MAX_ARGS_CHARS = 4096
MAX_INPUT_FILES = 32
MAX_URL_CHARS = 2048
MAX_VALIDITY_SECONDS = 7 * 24 * 3600  # an order is valid at most a week after it is made
MAX_ATTEMPTS = 10
DEFAULT_ATTEMPTS = 3
# iExec's categories: the most wall-clock time a task may take, from its first claim.
CATEGORIES = {"XS": 5 * 60, "S": 20 * 60, "M": 3600, "L": 3 * 3600, "XL": 10 * 3600}


class TaskOrderError(ConfideError):
    """A task order that is malformed or not signed by its requester."""


@dataclass(frozen=True)
class TaskOrder:
    requester: str
    app: str
    app_measurement: Measurement
    tee: tuple[str, ...]
    tolerate: tuple[str, ...]
    ignore_advisories: tuple[str, ...]
    secrets: tuple[tuple[int, str], ...]  # (index, requester secret name), sorted by index
    dataset: str | None
    # SHA-256 hex of the requester's result public key: the result (unless
    # ``encrypt_result`` is false) and always the task's logs are sealed to it
    result_key: str | None
    sms_key: str  # the sms token key (Ed25519 public, hex) the requester trusts
    workerpool: str
    salt: str  # 128-bit random hex: two orders for the same work are two tasks
    dataset_checksum: str | None = None  # the dataset record's checksum (its volume tag)
    args: str = ""  # the app's command-line arguments (split with shell rules)
    input_files: tuple[tuple[str, str], ...] = ()  # (https URL, SHA-256 hex), in order
    category: str = "XS"  # CATEGORIES: the task's deadline
    valid_until: int = 0  # unix seconds: no release after it (required: from_json refuses 0)
    max_attempts: int = DEFAULT_ATTEMPTS  # never more releases than this for the task
    encrypt_result: bool = True  # False: --no-encrypt-result (the logs are sealed anyway)

    def __post_init__(self) -> None:
        if self.encrypt_result and self.result_key is None:
            raise TaskOrderError("an encrypted result needs the requester's result key")

    def to_json(self) -> dict[str, Any]:
        return {
            "requester": self.requester,
            "app": self.app,
            "app_measurement": str(self.app_measurement),
            "tee": list(self.tee),
            "tolerate": list(self.tolerate),
            "ignore_advisories": list(self.ignore_advisories),
            "secrets": {str(index): name for index, name in self.secrets},
            "dataset": self.dataset,
            "result_key": self.result_key,
            "sms_key": self.sms_key,
            "workerpool": self.workerpool,
            "salt": self.salt,
            "dataset_checksum": self.dataset_checksum,
            "args": self.args,
            "input_files": [{"url": url, "sha256": digest} for url, digest in self.input_files],
            "category": self.category,
            "valid_until": self.valid_until,
            "max_attempts": self.max_attempts,
            "encrypt_result": self.encrypt_result,
        }

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def signing_message(self) -> str:
        return ORDER_LABEL + self.canonical()

    def task_id(self) -> str:
        """``0x`` + SHA-256 of the canonical order: one order, one task."""
        return "0x" + hashlib.sha256(_TASK_LABEL + self.canonical().encode()).hexdigest()

    def sign(self, wallet: Wallet) -> str:
        if wallet.address != self.requester:
            raise TaskOrderError("a task order is signed by its requester's wallet")
        return wallet.sign_text(self.signing_message())

    def check_signature(self, signature: str) -> None:
        try:
            signer = recover_signer(self.signing_message(), signature)
        except AuthError:
            raise TaskOrderError("the task order's signature is malformed") from None
        if signer != self.requester:
            raise TaskOrderError(
                f"the task order is not signed by its requester {self.requester} "
                f"(signed by {signer})"
            )

    @classmethod
    def from_json(cls, data: Any) -> TaskOrder:
        if not isinstance(data, dict):
            raise TaskOrderError("a task order is a JSON object")
        unknown = set(data) - _FIELDS
        missing = _FIELDS - set(data)
        if unknown or missing:
            raise TaskOrderError(
                "task order fields: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown {sorted(unknown)}" if unknown else "",
                        f"missing {sorted(missing)}" if missing else "",
                    )
                    if part
                )
            )
        try:
            return cls(
                requester=normalise_address(_text(data, "requester")),
                app=normalise_address(_text(data, "app")),
                app_measurement=Measurement.parse(_text(data, "app_measurement")),
                tee=_tees(data["tee"]),
                tolerate=_words(data["tolerate"], "tolerate", TOLERATIONS),
                ignore_advisories=_words(data["ignore_advisories"], "ignore_advisories", None),
                secrets=_mapping(data["secrets"]),
                dataset=None
                if data["dataset"] is None
                else normalise_address(_text(data, "dataset")),
                result_key=_optional_hex(data["result_key"], "result_key"),
                sms_key=_hex(data["sms_key"], "sms_key"),
                workerpool=normalise_address(_text(data, "workerpool")),
                salt=_salt(data["salt"]),
                dataset_checksum=_optional_hex(data["dataset_checksum"], "dataset_checksum"),
                args=_args(data["args"]),
                input_files=_input_files(data["input_files"]),
                category=_category(data["category"]),
                valid_until=_integer(data["valid_until"], "valid_until", 1, 2**40),
                max_attempts=_integer(data["max_attempts"], "max_attempts", 1, MAX_ATTEMPTS),
                encrypt_result=_boolean(data["encrypt_result"], "encrypt_result"),
            )
        except (AuthError, ConfideError) as exc:
            if isinstance(exc, TaskOrderError):
                raise
            raise TaskOrderError(f"task order: {exc}") from None


@dataclass(frozen=True)
class TaskRecord:
    """A task as the hub reports it: the signed order, and who may run it now."""

    order: TaskOrder
    signature: str  # the requester's EIP-191 signature of the order
    lease_token: str  # the current claim's fencing token ("" when nobody holds it)
    worker: str = ""  # the worker holding the lease

    @property
    def task_id(self) -> str:
        return self.order.task_id()


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise TaskOrderError(f"task order: {key} must be true or false")
    return value


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TaskOrderError(f"task order: {key} must be a string")
    return value


def _hex(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise TaskOrderError(f"task order: {key} must be 64 lower-case hex characters")
    return value


def _optional_hex(value: Any, key: str) -> str | None:
    return None if value is None else _hex(value, key)


def _salt(value: Any) -> str:
    if not isinstance(value, str) or not _SALT.fullmatch(value):
        raise TaskOrderError("task order: salt must be 32 lower-case hex characters")
    return value


def _tees(value: Any) -> tuple[str, ...]:
    tees = _words(value, "tee", frozenset({"sim", "sgx", "tdx"}))
    if not tees:
        raise TaskOrderError("task order: tee names at least one TEE type")
    return tees


def _words(value: Any, key: str, allowed: frozenset[str] | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskOrderError(f"task order: {key} must be a list of strings")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise TaskOrderError(f"task order: unknown {key} {unknown}")
    return tuple(sorted(set(value)))


def _mapping(value: Any) -> tuple[tuple[int, str], ...]:
    if not isinstance(value, dict) or len(value) > MAX_MAPPED_SECRETS:
        raise TaskOrderError(
            f"task order: secrets maps at most {MAX_MAPPED_SECRETS} indices to secret names"
        )
    pairs: list[tuple[int, str]] = []
    for key, name in value.items():
        if not isinstance(key, str) or not _INDEX.fullmatch(key) or int(key) > 1000:
            raise TaskOrderError(f"task order: secret index {key!r} is not 1 to 1000")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise TaskOrderError(f"task order: secret name {name!r} is not allowed")
        pairs.append((int(key), name))
    return tuple(sorted(pairs))


def _args(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_ARGS_CHARS or "\x00" in value:
        raise TaskOrderError(
            f"task order: args must be a string of at most {MAX_ARGS_CHARS} characters"
        )
    return value


def _input_files(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or len(value) > MAX_INPUT_FILES:
        raise TaskOrderError(f"task order: input_files lists at most {MAX_INPUT_FILES} files")
    files: list[tuple[str, str]] = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"url", "sha256"}:
            raise TaskOrderError('task order: an input file is {"url": …, "sha256": …}')
        url = entry["url"]
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise TaskOrderError(f"task order: input file URL {url!r} is not http(s)")
        if len(url) > MAX_URL_CHARS or any(c.isspace() for c in url):
            raise TaskOrderError("task order: an input file URL is too long or has spaces")
        files.append((url, _hex(entry["sha256"], "input file sha256")))
    return tuple(files)


def _category(value: Any) -> str:
    if value not in CATEGORIES:
        raise TaskOrderError(
            f"task order: category {value!r} is not one of {', '.join(CATEGORIES)}"
        )
    return str(value)


def _integer(value: Any, key: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TaskOrderError(f"task order: {key} must be an integer from {low} to {high}")
    return value
