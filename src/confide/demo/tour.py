"""The seed tutorial as a new user runs it: every step is a ``confide`` command line, run
in a child process against a ``confide up`` started in a temporary home. Then the
second seed: the copy DApp on a CAS session's encrypted volumes (push, attested run,
pull, byte for byte) and an older input volume refused.

Each step's command, wall time and outcome are kept; a step that fails stops the tour
with the command and its error. Nothing secret is printed: the secret values are handed
to the commands on their standard input (never on a command line), and only the result
read from the decrypted archive is shown.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from confide.demo.cubic import APP_SECRET, EXPECTED, REQUESTER_SECRET, SOURCES
from confide.errors import ConfideError

START_SECONDS = 60.0  # `confide up` migrates three databases at its first start
STEP_SECONDS = 300.0


class DemoError(ConfideError):
    """A step of the tour failed (the command and its error are named)."""


@dataclass
class LanguageRun:
    """One language's tour: the task, the result read back, and each step's seconds."""

    language: str
    app: str = ""
    task: str = ""
    x: float | None = None
    result: float | None = None
    verified: bool = False
    steps: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "app": self.app,
            "task": self.task,
            "x": self.x,
            "result": self.result,
            "expected": EXPECTED,
            "verified": self.verified,
            "steps": {name: round(seconds, 3) for name, seconds in self.steps.items()},
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Tour:
    """Runs ``confide`` commands in ``home`` against the platform at ``hub``."""

    def __init__(self, home: Path, hub: str, progress: Callable[[str], None]) -> None:
        self.home = home
        self.hub = hub
        self.progress = progress
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")},
            "CONFIDE_HOME": str(home),
            "CONFIDE_HUB": hub,
            # a throwaway wallet in a throwaway home: its password is random and dies here
            "CONFIDE_WALLET_PASSWORD": secrets.token_hex(16),
        }

    def confide(self, *args: str, stdin: str | None = None) -> Any:
        """Run ``confide ARGS --json``; its JSON answer, or DemoError naming the command."""
        command = ["confide", *args]
        done = subprocess.run(
            [sys.executable, "-m", "confide", *args, "--json"],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=STEP_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise DemoError(f"`{' '.join(command)}` failed: {reason}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise DemoError(f"`{' '.join(command)}` printed no JSON document") from None

    def refused(self, *args: str) -> str:
        """Run ``confide ARGS``, which must be refused (exit 1, ``error: …``); the error."""
        self.progress(f"[refused] $ {' '.join(['confide', *args])}")
        done = subprocess.run(
            [sys.executable, "-m", "confide", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=STEP_SECONDS,
            check=False,
        )
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        if done.returncode != 1 or not errors:
            raise DemoError(f"`confide {' '.join(args)}` was not refused")
        return errors[-1].removeprefix("error: ")

    def timed(self, run: LanguageRun, name: str, *args: str, stdin: str | None = None) -> Any:
        shown = " ".join(["confide", *args])
        self.progress(f"[{run.language}] $ {shown}")
        began = time.perf_counter()
        answer = self.confide(*args, stdin=stdin)
        run.steps[name] = time.perf_counter() - began
        return answer

    def language(self, language: str, work: Path) -> LanguageRun:
        """The tutorial for one language: init, deploy, push the app secret, run with
        the requester secret, download, verify, read f(x)."""
        run = LanguageRun(language)
        bundle = work / f"cubic-{language}"
        self.timed(run, "app init", "app", "init", str(bundle), "--lang", language)
        entrypoint, source = SOURCES[language]
        (bundle / entrypoint).write_text(source)  # the tutorial's app
        deployed = self.timed(run, "app deploy", "app", "deploy", str(bundle))
        run.app = str(deployed["address"])
        self.timed(run, "app push-secret", "app", "push-secret", run.app, stdin=APP_SECRET)
        queued = self.timed(
            run,
            "app run",
            "app",
            "run",
            run.app,
            "--workerpool",
            "default",
            "--secret",
            "1=x1",
            "--watch",
        )
        run.task = str(queued["task"])
        if queued.get("status") != "COMPLETED":
            raise DemoError(f"task {run.task} ended {queued.get('status')}")
        results = work / f"result-{language}"
        self.timed(
            run, "task show --download", "task", "show", run.task, "--download", str(results)
        )
        verdict = self.timed(
            run, "result verify", "result", "verify", run.task, "--dir", str(results), "--allow-sim"
        )
        run.verified = bool(verdict.get("verified", verdict.get("ok", False)))
        document = json.loads((results / "result.txt").read_text())
        run.x, run.result = float(document["x"]), float(document["result"])
        return run


# The SCONE seed's copy DApp: its input files, the program (a Python app here, so the
# demo needs no C compiler; examples/copy-dapp/ has the C one) and its session template.
COPY_FILES = {"f1.txt": "Hello world\n", "f2.txt": "Hello together\n"}
COPY_PROGRAM = """\
import shutil
from pathlib import Path

for source in sorted(Path("/encryptedInputs").iterdir()):
    if source.is_file():
        shutil.copyfile(source, Path("/encryptedOutputs") / source.name)
"""
INPUT, OUTPUT = "encrypted-input-files", "encrypted-output-files"
COPY_SESSION = f"""\
name: copy-dapp
version: "1"
predecessor: null
services:
  - name: application
    measurements: ["$MEASUREMENT"]
    command: python3 /app/app.py
    volumes: [{INPUT}, {OUTPUT}]
volumes:
  - {{name: {INPUT}, mode: input, path: /encryptedInputs}}
  - {{name: {OUTPUT}, mode: output, path: /encryptedOutputs}}
security:
  tolerate: [simulation]
"""


@dataclass
class CopyDappRun:
    """The second seed: the output volume's tag, whether OUTPUTS came back equal to
    INPUTS, and the refusal of a run given an older input volume."""

    output_tag: str = ""
    pulled_back: bool = False
    rollback_refused: str = ""
    steps: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "output_tag": self.output_tag,
            "pulled_back": self.pulled_back,
            "rollback_refused": self.rollback_refused,
            "steps": self.steps,
        }


def copy_dapp(tour: Tour, work: Path) -> CopyDappRun:
    """The SCONE seed's three steps with the copy DApp (encrypted push, attested run with
    its output pushed, decrypt), then a run given the older input volume: refused."""
    run, label = CopyDappRun(), LanguageRun("copy-dapp")
    bundle = work / "copy-dapp"
    tour.timed(label, "app init", "app", "init", str(bundle), "--lang", "python")
    (bundle / "app.py").write_text(COPY_PROGRAM)
    measurement = str(
        tour.timed(label, "app measure", "app", "measure", str(bundle))["measurement"]
    )
    template = work / "copy_dapp.yml"
    template.write_text(COPY_SESSION)
    tour.timed(
        label,
        "session create",
        "session",
        "create",
        str(template),
        "--var",
        f"MEASUREMENT={measurement}",
    )
    inputs, old = work / "INPUTS", work / "inputs-v1"
    inputs.mkdir(parents=True)
    for name, text in COPY_FILES.items():
        (inputs / name).write_text(text)
    push = ("volume", "push", str(inputs), "--session", "copy-dapp", "--volume", INPUT)
    tour.timed(label, "volume push", *push, "--keep", str(old))
    dapp = ("dapp", "run", "--session", "copy-dapp", "--app", str(bundle), "--tee", "sim")
    ran = tour.timed(label, "dapp run --push", *dapp, "--push")
    run.output_tag = str(ran["outputs"][OUTPUT]["tag"])
    outputs = work / "OUTPUTS"
    pull = ("volume", "pull", str(outputs), "--session", "copy-dapp", "--volume", OUTPUT)
    pulled = tour.timed(label, "volume pull", *pull)
    run.pulled_back = pulled["tag"] == run.output_tag and all(
        (outputs / name).read_text() == text for name, text in COPY_FILES.items()
    )
    # A new version of the inputs; a run handed the older encrypted copy is refused
    # before the program starts.
    (inputs / "f1.txt").write_text("Hello again\n")
    tour.timed(label, "volume push again", *push)
    run.rollback_refused = tour.refused(*dapp, "--volume", f"{INPUT}={old}")
    run.steps = label.steps
    return run


@contextmanager
def platform(home: Path, workers: int) -> Iterator[str]:
    """``confide up`` on a free loopback port with ``home`` as its home; its URL."""
    port = free_port()
    log = (home / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "confide", "up", "--port", str(port), "--workers", str(workers)],
        env={**os.environ, "CONFIDE_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                raise DemoError(f"`confide up` stopped at start: see {home / 'up.log'}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"`confide up` did not answer within {START_SECONDS:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def run_tour(
    languages: list[str], progress: Callable[[str], None], keep: Path | None = None
) -> tuple[dict[str, float], list[LanguageRun], CopyDappRun]:
    """The whole tour, in a temporary home (kept in ``keep`` when given): the seconds of
    the shared steps (wallet, requester secret), each language's run, then the second
    seed's copy DApp."""
    home = Path(tempfile.mkdtemp(prefix="confide-demo-")) if keep is None else keep
    home.mkdir(parents=True, exist_ok=True)
    try:
        with platform(home, workers=2) as hub:
            tour = Tour(home, hub, progress)
            setup = LanguageRun("setup")
            tour.timed(setup, "wallet create", "wallet", "create")
            tour.timed(
                setup,
                "requester push-secret",
                "requester",
                "push-secret",
                "x1",
                stdin=REQUESTER_SECRET,
            )
            runs = [tour.language(language, home / "work") for language in languages]
            return setup.steps, runs, copy_dapp(tour, home / "work" / "copy-dapp")
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
