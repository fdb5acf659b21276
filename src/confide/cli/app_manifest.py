"""``confide app manifest DIR --tee sgx``: the Gramine manifest of an app bundle (the
enclave runtime with the bundle inside) and, where Gramine is installed, its ``sgx:``
measurement (MRENCLAVE). docs/hardware.md."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.output import JsonOption, emit_json, note, say
from confide.errors import ConfideError


class HardwareTee(StrEnum):
    sgx = "sgx"
    tdx = "tdx"


def manifest(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="The app bundle directory.", show_default=False)
    ],
    tee: Annotated[
        HardwareTee,
        typer.Option("--tee", help="sgx: a Gramine manifest (tdx: a TD image, not built yet)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Where to write the manifest (default: DIR.manifest next to the bundle).",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Write the Gramine manifest that runs confide's enclave runtime with the bundle
    inside (argv and environment fixed, the interpreter, its libraries, the CA bundle and
    every bundle file trusted by SHA-256), print its path and, where Gramine is installed,
    the sgx measurement (MRENCLAVE) to register for the app."""
    if tee is HardwareTee.tdx:
        raise ConfideError(
            "--tee tdx needs a TD image (dm-verity root filesystem, RTMR3 extended with the "
            "bundle's hash), which confide cannot build yet: see docs/hardware.md"
        )
    from confide.hardware.gramine import write_manifest  # noqa: PLC0415 (start-up time)
    from confide.hardware.sgx_sign import GramineMissingError, sgx_measurement  # noqa: PLC0415

    path = write_manifest(directory, out)
    measurement: str | None = None
    missing: str | None = None
    try:
        measurement = str(sgx_measurement(path))
    except GramineMissingError as exc:
        missing = str(exc)
    if json_out:
        emit_json({"manifest": str(path), "measurement": measurement, "missing": missing})
        return
    say(str(path))
    if measurement is not None:
        say(f"measurement {measurement}")
    else:
        note(f"no sgx measurement: {missing}")
