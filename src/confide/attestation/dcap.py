"""SGX and TDX verification of Intel DCAP quotes, through dcap-qvl.

dcap-qvl checks the quote's signature chain up to Intel's root CA, the quoting enclave's
identity and the collateral (TCB info, QE identity, CRLs) at the injected time, and
reports the TCB status and advisories; confide then applies its own policy. Collateral
comes from a PCCS URL or an offline file or directory.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from confide.attestation.evidence import Appraisal, Evidence
from confide.attestation.measurement import Measurement
from confide.errors import AttestationError

MAX_QUOTE_BYTES = 64 * 1024
_SGX_DEBUG = 0x02  # ATTRIBUTES.DEBUG, bit 1 of the first byte
_ROOT_CA_FILE = "intel_sgx_root_ca.der"


class CollateralSource(Protocol):
    def collateral(self, quote: bytes) -> dcap_qvl.QuoteCollateralV3: ...


def _load_collateral(text: str, where: str) -> dcap_qvl.QuoteCollateralV3:
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as exc:
        raise AttestationError(f"collateral {where} is not valid DCAP collateral: {exc}") from None


class CollateralFile:
    """One collateral JSON file (the offline form ``attestation verify`` takes)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collateral(self, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        del quote
        try:
            text = self._path.read_text()
        except OSError as exc:
            raise AttestationError(f"cannot read collateral {self._path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise AttestationError(f"collateral {self._path} is not JSON text") from None
        return _load_collateral(text, str(self._path))


class CollateralDirectory:
    """An offline cache: ``<dir>/<fmspc>.json`` for each platform family (FMSPC, lower-case)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collateral(self, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        try:
            fmspc = dcap_qvl.parse_quote(quote).fmspc().lower()
        except (ValueError, TypeError) as exc:
            raise AttestationError(f"quote names no platform family (FMSPC): {exc}") from None
        if not re.fullmatch(r"[0-9a-f]{12}", fmspc):
            raise AttestationError("quote names a malformed FMSPC")
        path = self._directory / f"{fmspc}.json"
        if not path.is_file():
            raise AttestationError(f"no collateral for FMSPC {fmspc} in {self._directory}")
        return CollateralFile(path).collateral(quote)


class PccsCollateral:
    """Collateral fetched from a PCCS (or Intel PCS) at verification time."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self._url = url
        self._timeout = timeout

    def collateral(self, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        async def fetch() -> dcap_qvl.QuoteCollateralV3:
            return await asyncio.wait_for(dcap_qvl.get_collateral(self._url, quote), self._timeout)

        try:
            with ThreadPoolExecutor(1) as pool:  # its own event loop, even inside a server's
                return pool.submit(asyncio.run, fetch()).result()
        except Exception as exc:  # network, PCCS or parse failure: refuse with the reason
            raise AttestationError(
                f"cannot fetch collateral from {self._url}: {exc or type(exc).__name__}"
            ) from None


def intel_root_ca() -> bytes:
    """Intel's SGX root CA certificate (DER), the trust anchor of every DCAP quote."""
    return resources.files("confide.attestation").joinpath(_ROOT_CA_FILE).read_bytes()


class DcapVerifier:
    """Verifies ``sgx`` (quote v3) or ``tdx`` (quote v4/v5) evidence."""

    def __init__(self, tee: str, source: CollateralSource, root_ca_der: bytes | None = None):
        if tee not in ("sgx", "tdx"):
            raise ValueError(tee)
        self.tee = tee
        self._source = source
        self._root = root_ca_der or intel_root_ca()
        self._verifier = dcap_qvl.QuoteVerifier(self._root)

    def appraise(self, evidence: Evidence, now: int) -> Appraisal:
        claims = self.verify_quote(evidence.data, now)
        return appraisal_from_claims(self.tee, claims)

    def verify_quote(self, quote: bytes, now: int) -> dict[str, Any]:
        """dcap-qvl's verified claims; AttestationError naming why it failed."""
        kind = quote_type(quote)
        if kind != self.tee:
            raise AttestationError(f"evidence is a {kind.upper()} quote, not {self.tee.upper()}")
        self._check_chain_root(quote)
        collateral = self._source.collateral(quote)
        policy = dcap_qvl.QuotePolicy.claims_only(now)
        try:
            claims = self._verifier.verify_with_policy(quote, collateral, now, policy)
        except ValueError as exc:
            raise AttestationError(f"quote verification failed: {_clean(exc)}") from None
        result: dict[str, Any] = json.loads(claims.to_json())
        return result

    def _check_chain_root(self, quote: bytes) -> None:
        """The quote's certification chain must end in the trusted root itself.

        dcap-qvl anchors the chain to the root it is given and does not read the copy
        at the chain's end; refusing a chain whose copy differs means no byte of the
        certification data goes unchecked.
        """
        pem = dcap_qvl.parse_quote(quote).cert_chain_pem_bytes()
        try:
            chain = x509.load_pem_x509_certificates(pem or b"")
        except ValueError:
            raise AttestationError("quote certification data is malformed") from None
        if not chain or chain[-1].public_bytes(serialization.Encoding.DER) != self._root:
            raise AttestationError(
                "quote certification chain does not end in the trusted Intel root CA"
            )


def quote_type(quote: bytes) -> str:
    """``sgx`` or ``tdx`` from the quote's header; AttestationError if it does not parse."""
    if len(quote) > MAX_QUOTE_BYTES:
        raise AttestationError("quote is too large")
    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, TypeError) as exc:
        raise AttestationError(f"quote cannot be parsed: {_clean(exc)}") from None
    return "tdx" if parsed.is_tdx() else "sgx"


def _td_report_fields(report: dict[str, Any]) -> dict[str, Any]:
    """The TD report's fields, whatever its version: dcap-qvl nests the TD 1.0 fields
    under ``base`` for TD 1.5 (and twice for TD 1.5 with extensions)."""
    (body,) = report.values()  # {"TD10": …} or {"TD15": …} or {"TD15Ex": …}
    fields: dict[str, Any] = {}
    while isinstance(body, dict):
        fields = {**body, **fields}  # outer fields win; the innermost base supplies the rest
        body = body.get("base")
    return fields


def appraisal_from_claims(tee: str, claims: dict[str, Any]) -> Appraisal:
    """Build the appraisal from dcap-qvl's claims; malformed claims are an AttestationError."""
    try:
        return _appraisal_from_claims(tee, claims)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise AttestationError(
            f"quote claims are incomplete ({type(exc).__name__}: {exc})"
        ) from None


def _appraisal_from_claims(tee: str, claims: dict[str, Any]) -> Appraisal:
    report = claims["report"]
    tcb = claims["tcb"]
    smt = claims.get("platform", {}).get("pck", {}).get("smt_enabled")
    common: dict[str, Any] = {
        "tcb_status": str(tcb["status"]),
        "advisories": tuple(str(a) for a in tcb.get("advisory_ids", [])),
        "smt_enabled": {"True": True, "False": False}.get(str(smt)),
    }
    if tee == "sgx":
        body = report["SgxEnclave"]
        return Appraisal(
            tee="sgx",
            measurement=Measurement.parse(f"sgx:{body['mr_enclave']}"),
            report_data=bytes.fromhex(body["report_data"]),
            debug=bool(bytes.fromhex(body["attributes"])[0] & _SGX_DEBUG),
            mr_signer=str(body["mr_signer"]),
            isv_prod_id=int(body["isv_prod_id"]),
            isv_svn=int(body["isv_svn"]),
            **common,
        )
    body = _td_report_fields(report)
    return Appraisal(
        tee="tdx",
        measurement=Measurement.parse(f"tdx:{body['mr_td']}"),
        report_data=bytes.fromhex(body["report_data"]),
        # TDATTRIBUTES bits 7:0 are the TD-under-debug group (DEBUG is bit 0): any one
        # of them set makes the TD untrusted.
        debug=bytes.fromhex(body["td_attributes"])[0] != 0,
        rtmrs=tuple(str(body[f"rt_mr{i}"]) for i in range(4)),
        mr_config_id=str(body["mr_config_id"]),
        td_attributes=str(body["td_attributes"]),
        **common,
    )


def _clean(exc: Exception) -> str:
    text = str(exc).strip()
    return text.removeprefix("Verification failed: ") or type(exc).__name__
