"""The ``sgx:`` measurement (MRENCLAVE) of a Gramine manifest.

MRENCLAVE is the hash SGX computes while the enclave's pages are added: Gramine's own
loader binaries (``libpal.so``, the LibOS), the enclave layout (size, threads, stacks)
and the manifest, whose trusted-file hashes pin everything the enclave opens. Only
``gramine-sgx-sign`` lays out those pages, from the Gramine build installed with it, so
confide cannot compute MRENCLAVE without Gramine. :func:`sgx_measurement` runs
``gramine-sgx-sign`` (with a throwaway signing key: MRENCLAVE does not depend on the key,
MRSIGNER does) and reads MRENCLAVE back with ``gramine-sgx-sigstruct-view``; without
Gramine it raises :class:`GramineMissingError` saying what is missing and how to
install it.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from confide.attestation.measurement import Measurement
from confide.errors import ConfideError
from confide.hardware.gramine_tools import INSTALL, SIGN, GramineTools

_MRENCLAVE_TEXT = re.compile(r"mr_enclave\s*[:=]\s*([0-9a-fA-F]{64})")
_MEASUREMENT_TEXT = re.compile(r"Measurement:\s*\n?\s*([0-9a-fA-F]{64})")
_TIMEOUT = 600.0


class GramineMissingError(ConfideError):
    """Gramine's signing tools are not installed: no MRENCLAVE can be computed here."""


class SgxSignError(ConfideError):
    """gramine-sgx-sign or gramine-sgx-sigstruct-view failed, or the manifest is refused."""


def check_manifest(manifest_path: Path) -> dict[str, Any]:
    """The manifest, read; a debug enclave, an argv or environment from the host, or a
    missing DCAP attestation is refused (MRENCLAVE of such an enclave protects nothing)."""
    try:
        document = tomllib.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SgxSignError(f"cannot read the manifest {manifest_path}: {exc}") from None
    sgx = document.get("sgx", {})
    loader = document.get("loader", {})
    if sgx.get("debug", False) is not False:
        raise SgxSignError(f"{manifest_path}: sgx.debug is set: a debug enclave is refused")
    if sgx.get("remote_attestation") != "dcap":
        raise SgxSignError(f'{manifest_path}: sgx.remote_attestation must be "dcap"')
    for key in ("insecure__use_cmdline_argv", "insecure__use_host_env", "argv_src_file"):
        if key in loader:
            raise SgxSignError(f"{manifest_path}: loader.{key} takes input from the host: refused")
    return document


def _throwaway_key(directory: Path) -> Path:
    """An RSA-3072 key with exponent 3, as SGX signs with; only MRSIGNER depends on it."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = directory / "enclave-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def _run(argv: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SgxSignError(f"{Path(argv[0]).name} did not run: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SgxSignError(
            f"{Path(argv[0]).name} failed (exit {done.returncode}): " + " / ".join(tail)
        )
    return done.stdout


def parse_mrenclave(text: str) -> str:
    """MRENCLAVE from gramine-sgx-sigstruct-view's JSON or text output (or the
    ``Measurement:`` line gramine-sgx-sign prints)."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("mr_enclave"), str):
        value = document["mr_enclave"]
    else:
        match = _MRENCLAVE_TEXT.search(text) or _MEASUREMENT_TEXT.search(text)
        if match is None:
            raise SgxSignError("gramine-sgx-sigstruct-view printed no mr_enclave")
        value = match.group(1)
    return Measurement.parse(f"sgx:{value}").value


def sgx_measurement(
    manifest_path: Path,
    *,
    key: Path | None = None,
    search_path: str | None = None,
) -> Measurement:
    """``sgx:<MRENCLAVE>`` of the manifest at ``manifest_path``, as ``gramine-sgx-sign``
    computes it (run in the manifest's directory, where ``app/`` and ``job/`` are
    relative to). GramineMissingError when Gramine's tools are not on ``search_path``
    (default: PATH)."""
    tools = GramineTools.find(search_path)
    missing = tools.missing()
    if tools.sign is None or tools.view is None:
        raise GramineMissingError(
            f"the sgx measurement (MRENCLAVE) is computed by Gramine over its own loader "
            f"binaries, and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            f"not installed: {INSTALL}"
        )
    check_manifest(manifest_path)
    manifest_path = manifest_path.resolve()
    with tempfile.TemporaryDirectory(prefix="confide-sgx-sign-") as scratch:
        work = Path(scratch)
        signing_key = key if key is not None else _throwaway_key(work)
        stem = manifest_path.name.removesuffix(".manifest")
        output = work / f"{stem}.manifest.sgx"
        sigfile = work / f"{stem}.sig"
        printed = _run(
            [
                tools.sign,
                "--manifest",
                str(manifest_path),
                "--output",
                str(output),
                "--key",
                str(signing_key),
            ],
            manifest_path.parent,
        )
        if not sigfile.is_file():
            raise SgxSignError(f"{SIGN} wrote no signature {sigfile.name} ({printed.strip()})")
        viewed = _run([tools.view, "--output-format", "json", str(sigfile)], work)
        return Measurement("sgx", parse_mrenclave(viewed))
