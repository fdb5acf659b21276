"""The job the worker hands the enclave runtime (``JOB_DIR/job.json``), read strictly.

Everything in it comes from the untrusted worker: the runtime trusts none of it beyond
what it checks itself. The order must hash to the task id and carry its requester's
signature (the sms checks both again before releasing anything); the app bundle must
measure to the order's ``app_measurement``; the sms must prove the key the order pins.
The rest (URLs, deadline, limits, the sim platform key) can only make the task fail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.crypto.signing import SigningKey
from confide.errors import ConfideError
from confide.jsonsafe import loads_bounded
from confide.sms.tasks import TaskOrder

FORMAT = "confide-job-v1"
JOB_FILE = "job.json"
BUNDLE_FILE = "bundle.tar"
DATASET_FILE = "dataset.tar"
OUT_DIR = "out"
MAX_JOB_BYTES = 256 * 1024
TEES = ("sim", "sgx", "tdx")
DEFAULT_MEMORY_BYTES = 1 << 30
DEFAULT_TMPFS_BYTES = 256 << 20
_FIELDS = {
    "format",
    "task",
    "lease_token",
    "order",
    "signature",
    "worker",
    "sms_url",
    "storage_url",
    "tee",
    "sim_platform_key",
    "app_logs",
    "deadline",
    "relay_fd",
    "allow_loopback_inputs",
    "limits",
}


class JobError(ConfideError):
    """job.json is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Job:
    directory: Path
    task: str
    lease_token: str
    order: TaskOrder
    signature: str
    worker: str
    sms_url: str
    storage_url: str
    tee: str
    sim_platform_key: SigningKey | None = field(repr=False)
    app_logs: bool
    deadline: float
    relay_fd: int
    allow_loopback_inputs: bool
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    tmpfs_bytes: int = DEFAULT_TMPFS_BYTES

    @property
    def bundle_tar(self) -> Path:
        return self.directory / BUNDLE_FILE

    @property
    def dataset_tar(self) -> Path:
        return self.directory / DATASET_FILE

    @property
    def out(self) -> Path:
        return self.directory / OUT_DIR


def read_relay_fd(directory: Path) -> int | None:
    """The relay's descriptor as job.json names it, even when the rest is malformed (so
    that a failure can still be told to the worker); None when it cannot be read."""
    try:
        data = json.loads((directory / JOB_FILE).read_bytes()[:MAX_JOB_BYTES])
        fd = data["relay_fd"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return fd if isinstance(fd, int) and not isinstance(fd, bool) and fd >= 0 else None


def load_job(directory: Path) -> Job:
    """Read and check ``directory/job.json``; JobError naming what is wrong."""
    path = directory / JOB_FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise JobError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_JOB_BYTES:
        raise JobError(f"{path} is larger than {MAX_JOB_BYTES} bytes")
    try:
        data = loads_bounded(raw, 8)
    except (ValueError, UnicodeDecodeError):
        raise JobError(f"{path} is not JSON") from None
    if not isinstance(data, dict):
        raise JobError(f"{path} is not a JSON object")
    missing, unknown = sorted(_FIELDS - set(data)), sorted(set(data) - _FIELDS)
    if missing or unknown:
        raise JobError(f"job.json: missing fields {missing}, unknown fields {unknown}")
    if data["format"] != FORMAT:
        raise JobError(f"job.json: format is not {FORMAT!r}")
    order = TaskOrder.from_json(data["order"])
    task = _text(data, "task").lower()
    if order.task_id() != task:
        raise JobError(f"job.json: the order's hash is {order.task_id()}, not the task {task}")
    signature = _text(data, "signature")
    order.check_signature(signature)  # TaskOrderError names the signer
    tee = _text(data, "tee")
    if tee not in TEES or tee not in order.tee:
        raise JobError(f"job.json: tee {tee!r} is not one the order allows ({order.tee})")
    platform = data["sim_platform_key"]
    if tee == "sim":
        platform_key: SigningKey | None = _platform_key(platform)
    elif platform is not None:
        raise JobError("job.json: a sim platform key is given for a hardware TEE")
    else:
        platform_key = None
    limits = data["limits"]
    if not isinstance(limits, dict) or not set(limits) <= {"memory_bytes", "tmpfs_bytes"}:
        raise JobError("job.json: limits holds memory_bytes and tmpfs_bytes")
    return Job(
        directory=directory,
        task=task,
        lease_token=_text(data, "lease_token"),
        order=order,
        signature=signature,
        worker=_text(data, "worker").lower(),
        sms_url=_text(data, "sms_url"),
        storage_url=_text(data, "storage_url"),
        tee=tee,
        sim_platform_key=platform_key,
        app_logs=_boolean(data, "app_logs"),
        deadline=_number(data["deadline"], "deadline", 1, 2**40),
        relay_fd=int(_number(data["relay_fd"], "relay_fd", 0, 65535, integer=True)),
        allow_loopback_inputs=_boolean(data, "allow_loopback_inputs"),
        memory_bytes=int(
            _number(
                limits.get("memory_bytes", DEFAULT_MEMORY_BYTES),
                "limits.memory_bytes",
                16 << 20,
                1 << 40,
                integer=True,
            )
        ),
        tmpfs_bytes=int(
            _number(
                limits.get("tmpfs_bytes", DEFAULT_TMPFS_BYTES),
                "limits.tmpfs_bytes",
                1 << 20,
                1 << 40,
                integer=True,
            )
        ),
    )


def _platform_key(value: Any) -> SigningKey:
    try:
        seed = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise JobError("job.json: sim_platform_key is 64 hex characters for tee sim")
    return SigningKey.from_seed(seed)


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise JobError(f"job.json: {key} must be a non-empty string")
    return value


def _boolean(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise JobError(f"job.json: {key} must be true or false")
    return value


def _number(value: Any, key: str, low: float, high: float, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise JobError(f"job.json: {key} must be a number from {low} to {high}")
    return float(value)
