"""``confide dapp run`` against ``confide up``: the SCONE seed's copy DApp (a native
program run as is) on a CAS session's encrypted input volume, its output volume sealed in
the enclave and recorded, pulled back byte for byte; an older copy of the input refused
before the program starts."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from tests.acceptance.test_cli_up_platform import Up, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal

COPY = "#!/bin/sh\nset -eu\ncp -r /encryptedInputs/. /encryptedOutputs/\n"
TEMPLATE = """\
name: copy-dapp
version: "1"
predecessor: null
services:
  - name: application
    measurements: ["MEASUREMENT"]
    command: /app/app.sh
    volumes: [inputs, outputs]
volumes:
  - {name: inputs, mode: input, path: /encryptedInputs}
  - {name: outputs, mode: output, path: /encryptedOutputs}
security:
  tolerate: [simulation]
"""


def copy_dapp_session(up: Up, user: str) -> tuple[Path, Path]:  # noqa: F811
    """``user``'s wallet, the copy DApp's bundle and its session "copy-dapp"; (home, bundle)."""
    up.wallet(user)
    home = up.root / user
    bundle = home / "copy"
    up.ok(user, "app", "init", bundle, "--lang", "native")
    (bundle / "app.sh").write_text(COPY)
    measurement = str(up.ok(user, "app", "measure", bundle)["measurement"])
    template = home / "copy_dapp.yml"
    template.write_text(TEMPLATE.replace("MEASUREMENT", measurement))
    up.ok(user, "session", "create", template)
    return home, bundle


def test_the_copy_dapp_round_trip_and_a_rollback(up: Up) -> None:  # noqa: F811
    home, bundle = copy_dapp_session(up, "cora")
    inputs = home / "INPUTS"
    inputs.mkdir()
    (inputs / "f1.txt").write_text("Hello world\n")
    (inputs / "f2.txt").write_text("Hello together\n")
    old = home / "inputs-v1"
    push = ("volume", "push", inputs, "--session", "copy-dapp", "--volume", "inputs")
    first = up.ok("cora", *push, "--keep", old)
    run = ("dapp", "run", "--session", "copy-dapp", "--app", bundle, "--tee", "sim")
    ran = up.ok("cora", *run, "--push")
    assert ran["pushed"] is True and set(ran["outputs"]) == {"outputs"}
    out = home / "OUTPUTS"
    pulled = up.ok("cora", "volume", "pull", out, "--session", "copy-dapp", "--volume", "outputs")
    assert pulled["tag"] == ran["outputs"]["outputs"]["tag"]
    assert (out / "f1.txt").read_text() == "Hello world\n"
    assert (out / "f2.txt").read_text() == "Hello together\n"
    # A second version of the inputs; the old local copy is refused before the program runs.
    (inputs / "f1.txt").write_text("Hello again\n")
    second = up.ok("cora", *push)
    rolled = up.cli("cora", *run, "--volume", f"inputs={old}")
    assert_refusal(
        rolled,
        f"volume 'inputs' is not the session's current version {second['tag']}",
        f"the copy handed over says it is {first['tag']}",
    )
    # Another bundle (another measurement) is refused, naming it.
    (bundle / "app.sh").write_text(COPY + "echo changed\n")
    other = up.cli("cora", *run)
    assert_refusal(other, "does not list")


def test_two_runs_racing_for_the_output_one_wins(up: Up) -> None:  # noqa: F811
    """Two runs from the same output version, both pushing: exactly one tag update wins;
    the other fails clearly and its output is not recorded. The kept outputs are
    ciphertext only."""
    home, bundle = copy_dapp_session(up, "dora")
    inputs = home / "INPUTS"
    inputs.mkdir()
    (inputs / "secret.txt").write_text("PLAINTEXT-MARKER\n")
    up.ok("dora", "volume", "push", inputs, "--session", "copy-dapp", "--volume", "inputs")
    run = ("dapp", "run", "--session", "copy-dapp", "--app", bundle, "--tee", "sim", "--push")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda i: up.cli("dora", *run, "--keep", home / f"kept-{i}"), (1, 2)))
    codes = sorted(d.returncode for d in done)
    assert codes == [0, 1], [d.stderr for d in done]
    loser = next(d for d in done if d.returncode == 1)
    assert "error: " in loser.stderr and "409" in loser.stderr
    tags = up.ok(
        "dora", "volume", "pull", home / "out", "--session", "copy-dapp", "--volume", "outputs"
    )
    assert (home / "out" / "secret.txt").read_text() == "PLAINTEXT-MARKER\n"
    kept = [p for i in (1, 2) for p in (home / f"kept-{i}").rglob("*") if p.is_file()]
    assert kept and not any(b"PLAINTEXT-MARKER" in p.read_bytes() for p in kept)
    assert not any("PLAINTEXT-MARKER" in text for text in up.outputs)
    assert tags["tag"]


UNTRUSTED = """\
name: $SESSION
version: "1"
predecessor: null
access_policy: {read: [owner, "0x00000000000000000000000000000000000000aa"], update: [owner]}
services:
  - name: application
    measurements: ["MEASUREMENT"]
    command: /app/app.sh
    environment: {PRICE: "$$5"}
    volumes: [inputs, outputs]
volumes:
  - {name: inputs, mode: input, path: /encryptedInputs}
  - {name: outputs, mode: output, path: /encryptedOutputs}
security:
  tolerate: [simulation, debug-mode]
"""


def test_dapp_push_holds_an_untrusted_template_to_the_command_line(up: Up) -> None:  # noqa: F811
    owner = up.wallet("fay")
    reader = up.wallet("gus")
    home = up.root / "fay"
    bundle = home / "copy"
    up.ok("fay", "app", "init", bundle, "--lang", "native")
    (bundle / "app.sh").write_text(COPY)
    measurement = str(up.ok("fay", "app", "measure", bundle)["measurement"])
    template = home / "template.yml"
    template.write_text(UNTRUSTED.replace("MEASUREMENT", measurement))
    inputs = home / "INPUTS"
    inputs.mkdir()
    (inputs / "f1.txt").write_text("Hello world\n")
    push = ("dapp", "push", inputs, "--template", template, "--app", bundle)
    # A toleration beyond simulation is refused unless repeated; nothing is created.
    refused = up.cli("fay", *push, "--session", "s1")
    assert_refusal(refused, "tolerates 'debug-mode'", "--tolerate debug-mode")
    assert up.cli("fay", "session", "show", "s1").returncode == 1
    # Another bundle (another measurement) is refused.
    other = home / "other"
    up.ok("fay", "app", "init", other, "--lang", "native")
    elsewhere = ("dapp", "push", inputs, "--template", template, "--app", other)
    other_bundle = up.cli("fay", *elsewhere, "--session", "s1", "--tolerate", "debug-mode")
    assert_refusal(other_bundle, "does not list")
    # Repeated, it is accepted; the access policy is the caller's and the named reader's.
    accepted = ("--session", "s1", "--tolerate", "debug-mode", "--reader", reader)
    made = up.ok("fay", *push, *accepted)
    assert made["session"] == "s1" and made["owner"] == owner
    assert made["run"][:5] == ["confide", "dapp", "run", "--session", "s1"]
    shown = up.ok("fay", "session", "show", "s1")
    assert shown["access_policy"] == {"read": [owner, reader], "update": [owner]}
    assert shown["services"][0]["environment"] == {"PRICE": "$5"}
    assert "debug-mode" in shown["security"]["tolerate"]
    # The printed command runs, and the reader pulls the output.
    ran = up.ok("fay", *made["run"][1:])
    assert ran["pushed"] is True
    out = up.root / "gus" / "out"
    up.ok("gus", "volume", "pull", out, "--session", "s1", "--volume", "inputs", "--owner", owner)
    assert (out / "f1.txt").read_text() == "Hello world\n"


LEAKY = """\
name: leaky
version: "1"
predecessor: null
services:
  - name: application
    measurements: ["MEASUREMENT"]
    command: COMMAND
    volumes: [inputs, outputs]
volumes:
  - {name: inputs, mode: input, path: /encryptedInputs}
  - {name: outputs, mode: output, path: OUTPUT_PATH}
secrets:
  - {name: api, kind: ascii, value: "TOP-SECRET-VALUE"}
security:
  tolerate: [simulation]
"""


def test_after_attestation_the_host_learns_no_secret_and_no_file_name(up: Up) -> None:  # noqa: F811
    """Refusals once the configuration is open are fixed text: a command that injects a
    secret the sandbox refuses, a volume path over the system, a volume copy that does
    not open whole (whose errors would name a decrypted file)."""
    home, bundle = copy_dapp_session(up, "hal")
    measurement = str(up.ok("hal", "app", "measure", bundle)["measurement"])
    inputs = home / "INPUTS"
    inputs.mkdir()
    (inputs / "patient-john-doe.csv").write_text("diagnosis\n")
    run = ("dapp", "run", "--app", bundle, "--tee", "sim")
    cases = {
        "secret": ("API_KEY=$$confide:secrets:api$$ /app/app.sh", "/encryptedOutputs"),
        "path": ("/app/app.sh", "/usr/bin"),
    }
    for case, (command, path) in cases.items():
        text = LEAKY.replace("MEASUREMENT", measurement).replace("COMMAND", command)
        template = home / f"{case}.yml"
        template.write_text(text.replace("OUTPUT_PATH", path).replace("leaky", f"leaky-{case}"))
        up.ok("hal", "session", "create", template)
        session = f"leaky-{case}"
        up.ok("hal", "volume", "push", inputs, "--session", session, "--volume", "inputs")
        refused = up.cli("hal", *run, "--session", session)
        assert refused.returncode == 1 and "error: the run failed" in refused.stderr
        expected = "cannot run in the sandbox" if case == "secret" else "outside the system"
        assert expected in refused.stderr, refused.stderr
    # A copy missing one of its objects: refused without naming what is inside.
    copy = home / "inputs-copy"
    push = ("volume", "push", inputs, "--session", "copy-dapp", "--volume", "inputs")
    up.ok("hal", *push, "--keep", copy)
    victim = next(p for p in (copy / "objects").rglob("*") if p.is_file())
    victim.unlink()
    broken = up.cli("hal", *run, "--session", "copy-dapp", "--volume", f"inputs={copy}")
    assert_refusal(broken, "does not open whole")
    everything = "".join(up.outputs)
    assert "TOP-SECRET-VALUE" not in everything and "patient-john-doe" not in everything


def test_the_heap_is_measured_and_a_service_may_list_several_measurements(up: Up) -> None:  # noqa: F811
    """Changing the bundle's heap changes its sim measurement: a session that lists only
    the old one refuses the new bundle; one that lists both runs either."""
    home, bundle = copy_dapp_session(up, "ivy")
    first = str(up.ok("ivy", "app", "measure", bundle)["measurement"])
    manifest = bundle / "confide-app.yml"
    manifest.write_text(manifest.read_text().replace("heap: 64M", "heap: 128M"))
    second = str(up.ok("ivy", "app", "measure", bundle)["measurement"])
    assert second != first
    inputs = home / "INPUTS"
    inputs.mkdir()
    (inputs / "f1.txt").write_text("Hello world\n")
    up.ok("ivy", "volume", "push", inputs, "--session", "copy-dapp", "--volume", "inputs")
    run = ("dapp", "run", "--app", bundle, "--tee", "sim")
    assert_refusal(up.cli("ivy", *run, "--session", "copy-dapp"), second, "does not list")
    both = home / "both.yml"
    text = TEMPLATE.replace('"MEASUREMENT"', f'"{first}", "{second}"')
    both.write_text(text.replace("name: copy-dapp", "name: copy-both"))
    up.ok("ivy", "session", "create", both)
    up.ok("ivy", "volume", "push", inputs, "--session", "copy-both", "--volume", "inputs")
    assert up.ok("ivy", *run, "--session", "copy-both")["measurement"] == second
