"""``confide demo``: the iExec requester-secrets tutorial, end to end, on a private
``confide up``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from confide.cli.output import JsonOption, emit_json, note, say
from confide.errors import ConfideError

LANGUAGES = {"python": ["python"], "node": ["node"], "both": ["python", "node"]}


def demo(
    lang: Annotated[
        str,
        typer.Option(
            "--lang", metavar="LANG", help="The tutorial app's language: python, node or both."
        ),
    ] = "python",
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            metavar="DIR",
            help="Run in DIR and keep it (its platform, wallet, bundles and results); "
            "default: a temporary directory, removed at the end.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Run the iExec tutorial "Access requester secrets" end to end and print f(3).

    As a new user would: start `confide up` in a temporary home (simulation TEE, 2
    workers), make a wallet,
    write the cubic app f(x) = ax³ + bx² + cx + d, deploy it, push the app developer
    secret "2;0;-1;5" and the requester secret x1 = 3, run the task with
    `--secret 1=x1 --watch`, download and decrypt the result, verify it offline, and print
    f(3) with how long each step took. Then the SCONE seed's copy DApp: f1.txt "Hello
    world" and f2.txt "Hello together" pushed as a CAS session's encrypted input volume,
    copied by the program in the (simulated) enclave, the output volume pushed and
    pulled back byte for byte, and a run given the older input volume refused. Each step
    is the `confide` command it shows."""
    from confide.demo.cubic import EXPECTED  # noqa: PLC0415
    from confide.demo.tour import run_tour  # noqa: PLC0415

    if lang not in LANGUAGES:
        raise ConfideError(f"--lang is python, node or both, not {lang!r}")
    setup, runs, dapp = run_tour(LANGUAGES[lang], note, keep)
    wrong = [run.language for run in runs if run.result != EXPECTED or not run.verified]
    if not dapp.pulled_back:
        wrong.append("the copy DApp")
    if json_out:
        emit_json(
            {
                "setup": setup,
                "runs": [run.to_json() for run in runs],
                "copy_dapp": dapp.to_json(),
                "ok": not wrong,
            }
        )
    else:
        say("shared steps: " + _steps(setup))
        for run in runs:
            say(f"{run.language}: f({_number(run.x)}) = {_number(run.result)}")
            say("result verified (simulation)" if run.verified else "result NOT verified")
            say(f"{run.language} steps: " + _steps(run.steps))
        say(
            "copy DApp: f1.txt and f2.txt copied in the enclave, pulled back byte for byte"
            if dapp.pulled_back
            else "copy DApp: the outputs are NOT the inputs"
        )
        say(f"copy DApp: a run given the older input volume was refused: {dapp.rollback_refused}")
        say("copy DApp steps: " + _steps(dapp.steps))
    if wrong:
        raise ConfideError(f"the tour gave a wrong or unverified result for {', '.join(wrong)}")


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else str(value)


def _steps(steps: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items())
