"""Copy-DApp round trip: ``dapp push`` + ``dapp run --push`` + ``volume pull`` of a
256 MiB input through the SCONE seed's copy DApp, against ``cp -r`` and the
do-it-yourself way without a CAS (``tar | age``, a copy, ``age -d | tar``).

    python bench/dapp_bench.py [--size-mib 256] [--rounds 3] [--out FILE]

One ``confide up`` (sim TEE) in a temporary home; a wallet and a native copy bundle
(``cp -r`` of the input volume into the output volume, a shell script run as is). The
input is 64 files of 4 MiB (random bytes). Each round times, one after the other:

- ``cp -r`` of the input tree;
- ``tar | age -r KEY`` into a file, ``cp`` of that file, ``age -d | tar -x`` out of it;
- the three confide commands as a user types them (each a new process that unlocks the
  wallet: scrypt, about 0.8 s each here), and the same three steps through the library
  with the wallet unlocked once (what the commands cost beyond their start-up).

Each confide round uses a session of its own. The figures are the medians; the raw
figures go to bench/results/dapp.json. Goal (issue 20): the round trip within 4 x of
``cp -r``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confide.client.dapp import run_dapp
from confide.client.platform import Platform
from confide.client.volumes import pull_volume, push_volume
from confide.crypto.keystore import unlock_keystore
from confide.crypto.wallet import Wallet
from confide.demo.tour import LanguageRun, Tour
from confide.demo.tour import platform as up_platform

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
COPY = "#!/bin/sh\nset -eu\ncp -r /encryptedInputs/. /encryptedOutputs/\n"
TEMPLATE = """\
name: $SESSION
version: "1"
predecessor: null
services:
  - name: application
    measurements: ["{measurement}"]
    command: /app/app.sh
    volumes: [inputs, outputs]
volumes:
  - {{name: inputs, mode: input, path: /encryptedInputs}}
  - {{name: outputs, mode: output, path: /encryptedOutputs}}
security:
  tolerate: [simulation]
"""


def make_tree(root: Path, size: int, files: int = 64) -> None:
    root.mkdir(parents=True)
    each = size // files
    for i in range(files):
        (root / f"part-{i:03d}.bin").write_bytes(os.urandom(each))


def timed(action: Any) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def shell(command: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)


def diy_round(work: Path, tree: Path, recipient: str, identity: Path) -> float:
    """tar | age, a copy of the ciphertext, age -d | tar: the way without a CAS."""
    encrypted, copied, out = work / "diy.age", work / "diy-copy.age", work / "diy-out"
    for path in (encrypted, copied):
        path.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()

    def run() -> None:
        shell(f"tar -C {tree} -cf - . | age -r {recipient} > {encrypted}")
        shell(f"cp {encrypted} {copied}")
        shell(f"age -d -i {identity} {copied} | tar -C {out} -xf -")

    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dapp.json")
    args = parser.parse_args()
    if not (shutil.which("age") and shutil.which("age-keygen")):
        raise SystemExit("age and age-keygen are needed: bench/install-tools.sh")
    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="confide-dapp-bench-"))
    rounds: list[dict[str, float]] = []
    try:
        work = home / "work"
        tree = work / "INPUTS"
        make_tree(tree, args.size_mib * MIB)
        identity = work / "age-identity.txt"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        with up_platform(home, workers=0) as url:
            tour = Tour(home, url, lambda line: None)
            setup = LanguageRun("setup")
            tour.timed(setup, "wallet create", "wallet", "create")
            bundle = work / "copy"
            tour.timed(setup, "app init", "app", "init", str(bundle), "--lang", "native")
            (bundle / "app.sh").write_text(COPY)
            measured = tour.timed(setup, "app measure", "app", "measure", str(bundle))
            template = work / "copy_dapp.yml"
            template.write_text(TEMPLATE.format(measurement=measured["measurement"]))
            key = unlock_keystore(home / "wallet.json", tour.env["CONFIDE_WALLET_PASSWORD"])
            wallet = Wallet.from_private_key(key.hex())
            where = Platform(url, wallet=wallet, trust_dir=home / "trust")
            for number in range(args.rounds):
                figures: dict[str, float] = {}
                shutil.rmtree(work / "cp", ignore_errors=True)
                figures["cp_r"] = timed(lambda: shell(f"cp -r {tree} {work / 'cp'}"))
                figures["tar_age"] = diy_round(work, tree, recipient, identity)
                # the commands, as a user types them
                session = f"cli-{number}"
                out = work / f"out-cli-{number}"

                def commands(session: str = session, out: Path = out) -> None:
                    tour.confide(
                        "dapp",
                        "push",
                        str(tree),
                        "--template",
                        str(template),
                        "--app",
                        str(bundle),
                        "--session",
                        session,
                    )
                    tour.confide(
                        "dapp",
                        "run",
                        "--session",
                        session,
                        "--app",
                        str(bundle),
                        "--tee",
                        "sim",
                        "--push",
                    )
                    tour.confide(
                        "volume", "pull", str(out), "--session", session, "--volume", "outputs"
                    )

                figures["confide_cli"] = timed(commands)
                # the same steps in one process, the wallet unlocked once
                session = f"lib-{number}"
                tour.confide("session", "create", str(template), "--var", f"SESSION={session}")
                library_out = work / f"out-lib-{number}"

                def library(
                    session: str = session,
                    target: Path = library_out,
                    owner: str = wallet.address,
                    into: dict[str, float] = figures,
                ) -> None:
                    into["library_push"] = timed(
                        lambda: push_volume(
                            where, tree, owner=owner, session=session, volume="inputs"
                        )
                    )
                    into["library_run"] = timed(
                        lambda: run_dapp(
                            where,
                            home,
                            bundle,
                            owner=owner,
                            session=session,
                            service=None,
                            local_volumes={},
                            push=True,
                            keep=None,
                        )
                    )
                    into["library_pull"] = timed(
                        lambda: pull_volume(
                            where, target, owner=owner, session=session, volume="outputs"
                        )
                    )

                figures["confide_library"] = timed(library)
                for target in (out, library_out):
                    if sorted(p.name for p in target.iterdir()) != sorted(
                        p.name for p in tree.iterdir()
                    ):
                        raise SystemExit(f"the round trip into {target} lost files")
                rounds.append(figures)
                print(json.dumps(figures), file=sys.stderr)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    median = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    result = {
        "benchmark": "dapp",
        "command": "python bench/dapp_bench.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "python": host.python_version()},
        "size_mib": args.size_mib,
        "rounds": rounds,
        "median_seconds": median,
        "cli_vs_cp_r": median["confide_cli"] / median["cp_r"],
        "library_vs_cp_r": median["confide_library"] / median["cp_r"],
        "tar_age_vs_cp_r": median["tar_age"] / median["cp_r"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "goal": {"vs_cp_r": 4.0},
    }
    result["met"] = result["cli_vs_cp_r"] <= 4.0
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
