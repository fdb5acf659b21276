"""``confide attestation verify``: check a hardware quote offline and print the verdict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from confide.cli.output import JsonOption, emit_json, say
from confide.crypto.binding import REPORT_DATA_BYTES
from confide.errors import AttestationError

if TYPE_CHECKING:
    from confide.attestation.policy import Policy

app = typer.Typer(help="Attestation: verify evidence against a policy.", no_args_is_help=True)


def _report_data(value: str | None) -> str | None:
    """Check ``--report-data`` and pad it to 64 bytes (as SGX pads user data)."""
    if value is None:
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise typer.BadParameter("report data is hex") from None
    if len(data) > REPORT_DATA_BYTES:
        raise typer.BadParameter(f"report data is at most {REPORT_DATA_BYTES} bytes")
    return data.ljust(REPORT_DATA_BYTES, b"\x00").hex()


def _load_policy(path: Path | None) -> Policy:
    import yaml  # noqa: PLC0415  (imports are deferred to keep every command's start-up fast)

    from confide.attestation.policy import Policy  # noqa: PLC0415

    if path is None:
        return Policy.offline_default()
    try:
        data: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise AttestationError(f"cannot read policy {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AttestationError(f"policy {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise AttestationError(f"policy {path}: expected a mapping")
    return Policy.from_mapping(data, str(path))


@app.command("verify")
def verify(
    quote_file: Annotated[
        Path, typer.Argument(metavar="QUOTE_FILE", help="A DCAP quote (SGX v3, TDX v4/v5).")
    ],
    collateral: Annotated[
        Path, typer.Option("--collateral", metavar="FILE", help="Collateral JSON (offline).")
    ],
    now: Annotated[
        int | None,
        typer.Option(
            "--now",
            metavar="UNIX_SECONDS",
            min=0,
            max=2**40,
            help="Judge validity at this time (default: now).",
        ),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            metavar="FILE",
            help="YAML: measurements, tolerate, ignore_advisories (default: TCB UpToDate, "
            "no advisory, any measurement).",
        ),
    ] = None,
    report_data: Annotated[
        str | None,
        typer.Option(
            "--report-data",
            metavar="HEX",
            callback=_report_data,
            help="Expected report data (up to 64 bytes, zero-padded).",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Verify a hardware quote offline; exit 0 only when the policy accepts it."""
    from confide.attestation import Evidence, appraise_evidence  # noqa: PLC0415
    from confide.attestation.dcap import CollateralFile, DcapVerifier, quote_type  # noqa: PLC0415

    policy = _load_policy(policy_file)
    expected = None if report_data is None else bytes.fromhex(report_data)
    at = int(time.time()) if now is None else now
    try:
        quote = quote_file.read_bytes()
        tee: str | None = quote_type(quote)
    except OSError as exc:
        tee, verdict_reasons, appraisal = None, [f"cannot read {quote_file}: {exc.strerror}"], None
    except AttestationError as exc:
        tee, verdict_reasons, appraisal = None, [str(exc)], None
    if tee is not None:
        # Offline only: the quote's header picks the backend. Services pick it by policy.
        verifier = DcapVerifier(tee, CollateralFile(collateral))
        verdict = appraise_evidence(
            Evidence(tee, quote),
            policy=policy,
            verifiers={tee: verifier},
            now=at,
            expected_report_data=expected,
        )
        verdict_reasons, appraisal = list(verdict.reasons), verdict.appraisal
    ok = not verdict_reasons
    document = {
        "tee": tee,
        "ok": ok,
        "tcb_status": appraisal.tcb_status if appraisal else None,
        "advisories": list(appraisal.advisories) if appraisal else [],
        "measurement": str(appraisal.measurement) if appraisal else None,
        "reasons": verdict_reasons,
    }
    if json_out:
        emit_json(document)
    else:
        say(f"quote        {tee.upper() if tee else 'unreadable'}")
        if appraisal:
            say(f"measurement  {appraisal.measurement}")
            say(f"TCB status   {appraisal.tcb_status}")
            say(f"advisories   {', '.join(appraisal.advisories) or 'none'}")
        say("verdict      " + ("accepted" if ok else "refused"))
        for reason in verdict_reasons:
            say(f"  - {reason}")
    if not ok:
        typer.echo(f"error: attestation refused: {'; '.join(verdict_reasons)}", err=True)
        raise typer.Exit(1)
