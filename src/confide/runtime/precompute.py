"""Pre-compute: the app bundle extracted and measured, the dataset opened into IEXEC_IN.

The bundle's measurement must be the order's ``app_measurement`` (ATTESTATION_FAILED
otherwise: the sms would release nothing for other code, and the runtime must not run
other code under this task's name either). The dataset volume arrives as a tar the worker
downloaded (ciphertext); its tag is checked against the order's ``dataset_checksum``
before attesting (cheap, unauthenticated: a wrong volume fails before any release) and
again, authenticated, when it is decrypted with the key the sms released.
"""

from __future__ import annotations

import base64
import binascii
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confide.bundle.measure import AppManifest, measure_bundle, read_manifest
from confide.crypto.keys import SymmetricKey
from confide.errors import ConfideError
from confide.runtime.job import Job
from confide.runtime.stages import ATTESTATION_FAILED, PRE_COMPUTE_FAILED, TaskFailure

MAX_BUNDLE_BYTES = 1 << 30
MAX_BUNDLE_FILES = 100_000
MAX_DATASET_BYTES = 4 << 30
MAX_DATASET_FILES = 1_000_000
TEE_ENV = "CONFIDE_TEE"  # fixed (and measured) by the Gramine manifest on sgx
ENCLAVE_BUNDLE = Path("/app")  # the bundle's trusted files in the Gramine manifest
DATASET_DIR = "dataset"  # IEXEC_DATASET_FILENAME when the volume holds more than one entry


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: AppManifest


def extract(tar: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """The safe extraction of the sandbox (no absolute paths, ``..``, links, devices or
    setuid bits), imported when needed: the sandbox package is the app's jail too."""
    from confide.sandbox import extract_tar  # noqa: PLC0415

    dest.mkdir(mode=0o700)
    extract_tar(tar, dest, max_bytes=max_bytes, max_files=max_files)


def prepare_bundle(job: Job, work: Path) -> Bundle:
    """The app bundle: on ``sim``, bundle.tar extracted and checked to measure to the
    order's measurement; on ``sgx``, the bundle the Gramine manifest made trusted files at
    /app (MRENCLAVE covers them; Gramine checks each file as it is read)."""
    if job.tee != "sim":
        return _enclave_bundle(job)
    root = work / "app"
    try:
        extract(job.bundle_tar, root, max_bytes=MAX_BUNDLE_BYTES, max_files=MAX_BUNDLE_FILES)
    except ConfideError as exc:
        raise TaskFailure(
            PRE_COMPUTE_FAILED, f"the app bundle cannot be extracted: {exc}"
        ) from None
    try:
        measured = measure_bundle(root)
        manifest = read_manifest(root)
    except ConfideError as exc:
        raise TaskFailure(ATTESTATION_FAILED, f"the app bundle cannot be measured: {exc}") from None
    expected = job.order.app_measurement
    if measured != expected:
        raise TaskFailure(
            ATTESTATION_FAILED,
            f"the app bundle measures {measured}, the order pins {expected}: refused",
        )
    return Bundle(root, manifest)


def _enclave_bundle(job: Job) -> Bundle:
    """On hardware, only inside the enclave the manifest describes (``CONFIDE_TEE`` is
    fixed by it and measured; job.json's ``tee`` is the worker's word)."""
    if os.environ.get(TEE_ENV) != job.tee:
        raise TaskFailure(
            ATTESTATION_FAILED,
            f"tee {job.tee}: the runtime is not inside its enclave ({TEE_ENV} is not "
            f"{job.tee!r}, docs/hardware.md): refused",
        )
    try:
        return Bundle(ENCLAVE_BUNDLE, read_manifest(ENCLAVE_BUNDLE))
    except ConfideError as exc:
        raise TaskFailure(ATTESTATION_FAILED, f"the enclave's bundle: {exc}") from None


def split_args(args: str) -> list[str]:
    """The order's ``args`` split with shell rules (no expansion of anything)."""
    try:
        return shlex.split(args)
    except ValueError as exc:
        raise TaskFailure(PRE_COMPUTE_FAILED, f"the order's args cannot be split: {exc}") from None


def prepare_dataset(job: Job, work: Path) -> Path | None:
    """Extract the dataset volume (ciphertext) and check its tag; None without dataset."""
    order = job.order
    if order.dataset is None:
        return None
    if not job.dataset_tar.is_file():
        raise TaskFailure(
            PRE_COMPUTE_FAILED, f"the order names dataset {order.dataset}: no dataset.tar"
        )
    from confide.volume.api import read_volume_info  # noqa: PLC0415 (tasks with a dataset)

    volume = work / "dataset-volume"
    try:
        extract(job.dataset_tar, volume, max_bytes=MAX_DATASET_BYTES, max_files=MAX_DATASET_FILES)
        stored = read_volume_info(volume).stored_tag
    except ConfideError as exc:
        raise TaskFailure(PRE_COMPUTE_FAILED, f"the dataset volume cannot be read: {exc}") from None
    if order.dataset_checksum is not None and stored != order.dataset_checksum:
        raise TaskFailure(
            PRE_COMPUTE_FAILED,
            f"the dataset volume's tag is {stored}, the order pins {order.dataset_checksum}",
        )
    return volume


def dataset_key(config: dict[str, Any]) -> SymmetricKey:
    """The volume key the sms released (raw 32 bytes, or a key file's hex line)."""
    released = config.get("dataset")
    try:
        raw = base64.b64decode(str(released["key"]), validate=True)  # type: ignore[index]
    except (TypeError, KeyError, binascii.Error):
        raise TaskFailure(PRE_COMPUTE_FAILED, "the sms released no dataset key") from None
    try:
        if len(raw) == 32:
            return SymmetricKey(raw)
        return SymmetricKey.from_hex(raw.decode("ascii"))
    except (UnicodeDecodeError, ConfideError):
        raise TaskFailure(
            PRE_COMPUTE_FAILED, "the released dataset key is not a volume key"
        ) from None


def decrypt_dataset(job: Job, volume: Path, key: SymmetricKey, work: Path, in_dir: Path) -> str:
    """Decrypt the volume into IEXEC_IN; the IEXEC_DATASET_FILENAME (its one top-level
    entry when it holds one, else a directory ``dataset`` holding the tree)."""
    from confide.volume.api import decrypt_tree  # noqa: PLC0415 (tasks with a dataset)

    plain = work / "dataset-plain"
    try:
        decrypt_tree(volume, plain, key, expected_tag=job.order.dataset_checksum)
    except ConfideError as exc:
        raise TaskFailure(PRE_COMPUTE_FAILED, f"the dataset cannot be decrypted: {exc}") from None
    entries = sorted(os.listdir(plain))
    if len(entries) == 1 and not (in_dir / entries[0]).exists():
        os.replace(plain / entries[0], in_dir / entries[0])
        shutil.rmtree(plain)
        return entries[0]
    if (in_dir / DATASET_DIR).exists():
        raise TaskFailure(PRE_COMPUTE_FAILED, f"an input file is named {DATASET_DIR!r} too")
    os.replace(plain, in_dir / DATASET_DIR)
    return DATASET_DIR
