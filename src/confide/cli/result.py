"""``confide result``: the key pair that results are encrypted to, and offline verification
of a downloaded result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from confide.cli.options import SmsOption, signing_client
from confide.cli.output import JsonOption, emit_json, note, say, warn
from confide.cli.wallet import PasswordOption, WalletOption
from confide.config import confide_home
from confide.errors import KeyFileError

app = typer.Typer(
    help="Result encryption: your tasks' results are sealed to a public key you register "
    "with the sms; only your private key (kept at $CONFIDE_HOME/result-key) opens them.",
    no_args_is_help=True,
)


def default_key_path() -> Path:
    return confide_home() / "result-key"


@app.command("generate-encryption-keypair")
def generate_keypair(
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing key pair (results sealed to the old key then no "
            "longer open).",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Make an X25519 key pair; the private key goes to $CONFIDE_HOME/result-key (mode
    0600). Prints the public key and its SHA-256 (what task orders pin), never the private
    key. Next, `confide result push-encryption-key` registers the public key with the sms."""
    from confide.crypto.result_key import ResultKeyPair, result_key_sha256  # noqa: PLC0415

    path = default_key_path()
    pair = ResultKeyPair.generate()
    pair.write(path, overwrite=force)
    public = pair.public_bytes
    if json_out:
        emit_json(
            {"public_key": public.hex(), "sha256": result_key_sha256(public), "key_file": str(path)}
        )
        return
    say(f"public key {public.hex()}")
    say(f"sha256 {result_key_sha256(public)}")
    note(f"private key written to {path} (mode 0600); next: confide result push-encryption-key")


@app.command("push-encryption-key")
def push_key(
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="F",
            help="The public key: 64 hex characters or a PEM file (a private-key PEM gives "
            "its public half). Default: the public half of $CONFIDE_HOME/result-key.",
        ),
    ] = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Register your result-encryption public key with the sms (a new version each time)."""
    from confide.crypto.result_key import public_key_from_file, result_key_sha256  # noqa: PLC0415

    public = public_key_from_file(key_file or default_key_path())
    result = signing_client(sms, wallet, password).push_result_key(public)
    if result["sha256"] != result_key_sha256(public):
        raise KeyFileError("the sms acknowledged another key than the one sent")
    if json_out:
        emit_json(
            {"address": result["address"], "sha256": result["sha256"], "version": result["version"]}
        )
        return
    say(f"result encryption key of {result['address']} stored (version {result['version']})")
    say(f"sha256 {result['sha256']}")


DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        metavar="DIR",
        help="Where `confide task show TASK --download DIR` kept TASK.zip, TASK.json and the "
        "extracted files (default: the current directory).",
    ),
]


@app.command("verify")
def verify_result(
    task: Annotated[str, typer.Argument(metavar="TASK", help="The task id (0x and 64 hex).")],
    directory: DirOption = Path(),
    allow_sim: Annotated[
        bool,
        typer.Option(
            "--allow-sim",
            help="Accept a result from a simulated TEE (or any 'warning' attestation): it "
            "has no hardware protection.",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Check a downloaded result offline: the sms token's signature against the sms key
    your order pinned, its issuer, audience, task, TEE type, times and status, the app
    measurement, the enclave's signature on the result statement and what it binds (task,
    order, requester, dataset, inputs) and its outcome (a COMPLETED task's result must be
    signed 'completed'), the kept zip's digest and the salted digest of the
    files inside it and of the files extracted. Exits 1 naming the failed check."""
    import time  # noqa: PLC0415

    from confide.results.digest import ResultError  # noqa: PLC0415
    from confide.results.fetch import kept_paths, read_document  # noqa: PLC0415
    from confide.results.verify import verify  # noqa: PLC0415

    stored, document_path = kept_paths(directory, task)
    document = read_document(document_path)
    if not stored.exists():
        raise ResultError(
            f"no {stored}: download the result first (confide task show {task} "
            f"--download {directory})"
        )
    files = document.get("files")
    verdict = verify(
        task,
        document,
        stored,
        now=int(time.time()),
        allow_sim=allow_sim,
        result_private_key_path=default_key_path(),
        extracted_dir=directory,
        extracted_names=[f for f in files if isinstance(f, str)]
        if isinstance(files, list)
        else None,
    )
    if json_out:
        emit_json(verdict.to_json())
    else:
        for check in verdict.checks:
            say(f"  {check.status:<8} {check.name:<20} {check.detail}")
        if verdict.ok:
            say("result verified" + (" (simulation)" if verdict.simulation else ""))
            if verdict.task_failed:  # an error result: genuine, but not a computed result
                cause = (verdict.outcome or "").removeprefix("failed:")
                say(f"the task failed ({cause}, signed by the enclave): see error.txt")
    if verdict.ok and verdict.simulation:
        warn("a simulation result has no hardware protection")
    if not verdict.ok:
        typer.echo(f"error: result verification failed: {verdict.reason()}", err=True)
        raise typer.Exit(1)
