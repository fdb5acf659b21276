"""The ``sgx:`` measurement of a Gramine manifest: computed by Gramine's own
gramine-sgx-sign and read back with gramine-sgx-sigstruct-view. Without Gramine the error
says what is missing and how to install it. Here both tools are played by scripts that
record how they were called (no Gramine on this machine)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from confide.bundle import init_bundle
from confide.cli.app_manifest import manifest as manifest_command
from confide.hardware.gramine_tools import GramineTools
from confide.hardware.sgx_sign import (
    GramineMissingError,
    SgxSignError,
    parse_mrenclave,
    sgx_measurement,
)
from tests.unit.test_gramine_manifest import RESERVED_CHECKOUT

MRENCLAVE = "3d" * 32
GOOD = 'sgx.debug = false\nsgx.remote_attestation = "dcap"\nloader.argv = ["python3"]\n'

SIGN = """#!{python}
import json, pathlib, sys
args = sys.argv[1:]
pathlib.Path({log!r}).write_text(json.dumps({{"argv": args, "cwd": __import__("os").getcwd()}}))
if {fail!r}:
    sys.stderr.write("error: cannot open libpal.so\\n")
    sys.exit(1)
output = pathlib.Path(args[args.index("--output") + 1])
output.write_text("signed")
output.with_name(output.name.removesuffix(".manifest.sgx") + ".sig").write_bytes(b"SIGSTRUCT")
print("Measurement:\\n    " + {mrenclave!r})
"""
VIEW = """#!{python}
import json, sys
assert sys.argv[1:3] == ["--output-format", "json"], sys.argv
assert open(sys.argv[3], "rb").read() == b"SIGSTRUCT"
print({output!r})
"""


def _tools(bin_dir: Path, *, fail: bool = False, view_output: str | None = None) -> Path:
    bin_dir.mkdir()
    log = bin_dir / "sign.json"
    view = view_output or json.dumps({"mr_enclave": MRENCLAVE, "mr_signer": "aa" * 32})
    scripts = {
        "gramine-sgx-sign": SIGN.format(
            python=sys.executable, log=str(log), fail=fail, mrenclave=MRENCLAVE
        ),
        "gramine-sgx-sigstruct-view": VIEW.format(python=sys.executable, output=view),
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return log


def _manifest(tmp_path: Path, text: str = GOOD) -> Path:
    path = tmp_path / "cubic.manifest"
    path.write_text(text)
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    path.write_text("not used by the fake signer")
    return path


def test_without_gramine_the_error_names_what_is_missing_and_how_to_install(
    tmp_path: Path,
) -> None:
    with pytest.raises(GramineMissingError) as missing:
        sgx_measurement(_manifest(tmp_path), search_path=str(tmp_path / "empty"))
    message = str(missing.value)
    assert "gramine-sgx-sign and gramine-sgx-sigstruct-view are not installed" in message
    assert "Gramine over its own loader binaries" in message
    assert "apt-get install gramine" in message


def test_gramine_sgx_sign_computes_the_measurement(tmp_path: Path, key: Path) -> None:
    log = _tools(tmp_path / "bin")
    manifest = _manifest(tmp_path)
    measurement = sgx_measurement(manifest, key=key, search_path=str(tmp_path / "bin"))
    assert str(measurement) == f"sgx:{MRENCLAVE}"
    called = json.loads(log.read_text())
    argv = called["argv"]
    assert argv[argv.index("--manifest") + 1] == str(manifest.resolve())
    assert argv[argv.index("--key") + 1] == str(key)
    assert argv[argv.index("--output") + 1].endswith("cubic.manifest.sgx")
    assert called["cwd"] == str(tmp_path)  # where app/ and job/ are relative to


def test_a_throwaway_key_signs_when_none_is_given(tmp_path: Path) -> None:
    log = _tools(tmp_path / "bin")
    assert sgx_measurement(_manifest(tmp_path), search_path=str(tmp_path / "bin")).value == (
        MRENCLAVE
    )
    argv = json.loads(log.read_text())["argv"]
    used = Path(argv[argv.index("--key") + 1])
    assert not used.exists()  # made in a scratch directory, gone afterwards


def test_a_failing_signer_is_reported_with_its_words(tmp_path: Path, key: Path) -> None:
    _tools(tmp_path / "bin", fail=True)
    with pytest.raises(SgxSignError, match=r"exit 1.*cannot open libpal\.so"):
        sgx_measurement(_manifest(tmp_path), key=key, search_path=str(tmp_path / "bin"))


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        (GOOD.replace("false", "true"), "debug enclave is refused"),
        (GOOD.replace('"dcap"', '"none"'), "remote_attestation"),
        (GOOD + "loader.insecure__use_host_env = true\n", "from the host"),
        (GOOD + "loader.insecure__use_cmdline_argv = true\n", "from the host"),
        (GOOD + 'loader.argv_src_file = "file:argv"\n', "from the host"),
        ("not = [toml", "cannot read the manifest"),
    ],
)
def test_an_unsafe_manifest_is_refused_before_signing(
    tmp_path: Path, key: Path, text: str, refusal: str
) -> None:
    log = _tools(tmp_path / "bin")
    with pytest.raises(SgxSignError, match=refusal):
        sgx_measurement(_manifest(tmp_path, text), key=key, search_path=str(tmp_path / "bin"))
    assert not log.exists()


def test_mrenclave_is_read_from_json_or_text() -> None:
    assert parse_mrenclave(json.dumps({"mr_enclave": MRENCLAVE.upper()})) == MRENCLAVE
    text = f"Attributes:\n    mr_signer: {'ab' * 32}\n    mr_enclave: {MRENCLAVE}\n"
    assert parse_mrenclave(text) == MRENCLAVE
    assert parse_mrenclave(f"Measurement:\n    {MRENCLAVE}\n") == MRENCLAVE
    with pytest.raises(SgxSignError, match="no mr_enclave"):
        parse_mrenclave("nothing here")


def test_gramines_own_files_are_found_next_to_its_tools(tmp_path: Path) -> None:
    prefix = tmp_path / "gramine"
    (prefix / "bin").mkdir(parents=True)
    libdir = prefix / "lib" / "x86_64-linux-gnu" / "gramine"
    libdir.mkdir(parents=True)
    (libdir / "libsysdb.so").write_bytes(b"libos")
    layout = GramineTools(str(prefix / "bin" / "gramine-sgx-sign"), None).layout()
    assert layout.libos == libdir / "libsysdb.so"
    assert layout.runtime_dir == libdir / "runtime" / "glibc"
    assert GramineTools(None, None).layout().libos.name == "libsysdb.so"  # Debian's default


@RESERVED_CHECKOUT
def test_the_command_prints_the_measurement_where_gramine_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    bundle = tmp_path / "cubic"
    init_bundle(bundle, "python", "cubic")
    app = typer.Typer()
    app.command("manifest")(manifest_command)
    app.command("other")(lambda: None)
    done = CliRunner().invoke(app, ["manifest", str(bundle), "--tee", "sgx"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        str(tmp_path / "cubic.manifest"),
        f"measurement sgx:{MRENCLAVE}",
    ]
