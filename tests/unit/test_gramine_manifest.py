"""The Gramine manifest of an app bundle (``confide app manifest DIR --tee sgx``): argv and
environment fixed with nothing from the host, every trusted file pinned by its SHA-256
(interpreter, its libraries, standard library, the runtime's dependencies, confide, the
CA bundle, every bundle file), the sizes derived from the bundle, debug off, DCAP on."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import confide
from confide.bundle import init_bundle
from confide.cli.app_manifest import manifest as manifest_command
from confide.errors import ConfideError
from confide.hardware.gramine import (
    GRAMINE_THREADS,
    RESERVED,
    GramineManifestError,
    build_manifest,
    default_output,
    power_of_two,
    size_string,
    write_manifest,
)
from confide.hardware.gramine_tools import GramineLayout
from confide.hardware.runtime_files import HostFile, RuntimeFiles, current_runtime_files

LAYOUT = GramineLayout(Path("/opt/gramine/libsysdb.so"), Path("/opt/gramine/runtime/glibc"))


def _checkout_is_reserved() -> bool:
    """Whether this interpreter or confide lives where the enclave mounts something of
    its own (a checkout under /tmp): its manifest is then refused, by design (tested
    with a made-up layout below), so the tests that build this host's manifest cannot
    run here."""
    places = (Path(os.path.realpath(p)) for p in (confide.__file__, os.__file__))
    return any(
        place.as_posix() == r or place.as_posix().startswith(r + "/")
        for place in places
        for r in RESERVED
    )


RESERVED_CHECKOUT = pytest.mark.skipif(
    _checkout_is_reserved(),
    reason="this checkout lives under a path the enclave mounts itself (e.g. /tmp): "
    "its manifest is refused by design",
)


@pytest.fixture(scope="module")
def runtime() -> RuntimeFiles:
    """This interpreter's runtime files, listed and hashed once for the module."""
    if _checkout_is_reserved():
        pytest.skip("this checkout lives under a path the enclave mounts itself (e.g. /tmp)")
    return current_runtime_files("python")


def _bundle(root: Path, lang: str = "python", heap: str = "64M", threads: int = 4) -> Path:
    bundle = root / f"bundle-{lang}"
    init_bundle(bundle, lang, "cubic")
    manifest = bundle / "confide-app.yml"
    text = manifest.read_text()
    lines = [f"heap: {heap}" if line.startswith("heap:") else line for line in text.splitlines()]
    lines = [f"threads: {threads}" if line.startswith("threads:") else line for line in lines]
    manifest.write_text("\n".join(lines) + "\n")
    (bundle / "lib").mkdir()
    (bundle / "lib" / 'we"ird\nname.py').write_text("X = 1\n")
    return bundle


def _read(bundle: Path, runtime: RuntimeFiles) -> dict[str, Any]:
    return tomllib.loads(build_manifest(bundle, runtime, LAYOUT).text())


def _trusted(document: dict[str, Any]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for entry in document["sgx"]["trusted_files"]:
        if isinstance(entry, str):
            found[entry] = None
        else:
            assert set(entry) == {"uri", "sha256"}
            found[entry["uri"]] = entry["sha256"]
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_argv_and_environment_are_fixed_and_nothing_comes_from_the_host(
    tmp_path: Path, runtime: RuntimeFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_ONLY_VALUE", "leaked-from-the-host")
    document = _read(_bundle(tmp_path), runtime)
    executable = str(runtime.executable)
    loader = document["loader"]
    assert document["libos"] == {"entrypoint": executable}
    assert loader["entrypoint"] == {"uri": "file:/opt/gramine/libsysdb.so"}
    assert loader["argv"] == [executable, "-m", "confide.runtime", "/job"]
    assert set(loader) == {"entrypoint", "argv", "env", "log_level"}  # no insecure__*, argv_src
    env = loader["env"]
    assert all(isinstance(value, str) for value in env.values())  # no {passthrough = true}
    assert "leaked-from-the-host" not in json.dumps(document)
    assert env["CONFIDE_TEE"] == "sgx"
    assert env["PYTHONHOME"] == str(runtime.home)
    assert env["PYTHONPATH"].split(":") == [str(p) for p in runtime.python_path]
    assert env["SSL_CERT_FILE"] == str(runtime.ca_bundle)
    assert env["LD_LIBRARY_PATH"].split(":")[0] == "/lib"


def test_sgx_settings_come_from_the_bundle(tmp_path: Path, runtime: RuntimeFiles) -> None:
    small = _read(_bundle(tmp_path / "a", heap="64M", threads=4), runtime)
    large = _read(_bundle(tmp_path / "b", heap="1G", threads=32), runtime)
    for document in (small, large):
        sgx = document["sgx"]
        assert sgx["debug"] is False
        assert sgx["remote_attestation"] == "dcap"
        assert sgx["edmm_enable"] is False
        assert sgx["file_check_policy"] == "strict"
    assert small["sgx"]["enclave_size"] == "1G"  # 64M + the runtime's 512M, rounded up
    assert large["sgx"]["enclave_size"] == "2G"
    assert small["sgx"]["max_threads"] == 4 + GRAMINE_THREADS
    assert large["sgx"]["max_threads"] == 32 + GRAMINE_THREADS
    assert small["sys"]["stack"] == {"size": "8M"}


def test_sizes_are_powers_of_two_in_gramine_units() -> None:
    assert [power_of_two(n) for n in (1, 2, 3, 1 << 20, (1 << 20) + 1)] == [
        2,
        2,
        4,
        1 << 20,
        1 << 21,
    ]
    assert [size_string(n) for n in (1 << 30, 3 << 20, 8 << 10, 1000)] == [
        "1G",
        "3M",
        "8K",
        "1000",
    ]


def test_every_bundle_file_is_trusted_by_its_sha256(tmp_path: Path, runtime: RuntimeFiles) -> None:
    bundle = _bundle(tmp_path)
    trusted = _trusted(_read(bundle, runtime))
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert len(files) == 3
    for path in files:
        uri = "file:app/" + path.relative_to(bundle).as_posix()
        assert trusted[uri] == _sha256(path), uri
    assert [u for u in trusted if u.startswith("file:app/")] == sorted(
        "file:app/" + p.relative_to(bundle).as_posix() for p in files
    )


def test_the_runtime_its_interpreter_libraries_and_ca_bundle_are_trusted(
    tmp_path: Path, runtime: RuntimeFiles
) -> None:
    trusted = _trusted(_read(_bundle(tmp_path), runtime))
    package = Path(confide.__file__).parent
    import httpx  # the runtime's HTTP client, a dependency from site-packages

    expected = [
        runtime.executable,
        runtime.ca_bundle,
        package / "__init__.py",
        package / "hardware" / "gramine.py",
        Path(os.__file__),  # the standard library
        Path(httpx.__file__),
    ]
    for path in expected:
        assert trusted[f"file:{path}"] == _sha256(path), path
    libraries = [u for u in trusted if ".so" in u and "site-packages" not in u]
    assert any("libssl" in u or "libpython" in u or "libffi" in u for u in libraries)
    assert not any(Path(u).name in ("libc.so.6", "ld-linux-x86-64.so.2") for u in libraries)
    assert not any("__pycache__" in u for u in trusted)
    # Gramine's own glibc: hashed by gramine-sgx-sign when Gramine is not installed here
    assert trusted["file:/opt/gramine/runtime/glibc/"] is None
    assert [u for u, digest in trusted.items() if digest is None] == [
        "file:/opt/gramine/runtime/glibc/"
    ]


@RESERVED_CHECKOUT
def test_gramines_runtime_is_hashed_here_where_it_is_installed(
    tmp_path: Path, runtime: RuntimeFiles
) -> None:
    glibc = tmp_path / "gramine" / "runtime" / "glibc"
    glibc.mkdir(parents=True)
    (glibc / "libc.so.6").write_bytes(b"gramine's glibc")
    layout = GramineLayout(tmp_path / "gramine" / "libsysdb.so", glibc)
    document = tomllib.loads(build_manifest(_bundle(tmp_path), runtime, layout).text())
    trusted = _trusted(document)
    assert trusted[f"file:{glibc}/libc.so.6"] == hashlib.sha256(b"gramine's glibc").hexdigest()
    assert None not in trusted.values()
    assert document["fs"]["mounts"][0] == {"path": "/lib", "uri": f"file:{glibc}"}


def test_mounts_app_job_and_tmp(tmp_path: Path, runtime: RuntimeFiles) -> None:
    document = _read(_bundle(tmp_path), runtime)
    mounts = document["fs"]["mounts"]
    assert mounts[0] == {"path": "/lib", "uri": "file:/opt/gramine/runtime/glibc"}
    assert {"path": "/app", "uri": "file:app"} in mounts
    assert {"path": "/job", "uri": "file:job"} in mounts
    assert {"type": "tmpfs", "path": "/tmp"} in mounts
    for root in runtime.roots():  # the runtime's files at their own paths
        assert {"path": str(root), "uri": f"file:{root}"} in mounts
    assert document["sgx"]["allowed_files"] == [
        "file:job/job.json",
        "file:job/dataset.tar",
        "file:job/out/",
    ]
    assert document["fs"]["start_dir"] == "/job"
    trusted = _trusted(document)  # every trusted host file lies under a mounted root
    roots = [Path(m["uri"].removeprefix("file:")) for m in mounts if "uri" in m]
    for uri in trusted:
        if not uri.startswith("file:app/") and not uri.endswith("/"):
            path = Path(uri.removeprefix("file:"))
            assert any(r in path.parents for r in roots if r.is_absolute()), uri


def test_the_manifest_changes_with_the_bundle_not_with_touching_it(
    tmp_path: Path, runtime: RuntimeFiles
) -> None:
    bundle = _bundle(tmp_path)
    first = build_manifest(bundle, runtime, LAYOUT).text()
    os.utime(bundle / "app.py", (1, 1))
    assert build_manifest(bundle, runtime, LAYOUT).text() == first
    (bundle / "app.py").write_text((bundle / "app.py").read_text() + "# changed\n")
    assert build_manifest(bundle, runtime, LAYOUT).text() != first


@RESERVED_CHECKOUT
def test_a_node_app_trusts_node(tmp_path: Path) -> None:
    if not Path("/usr/bin/node").exists():
        pytest.skip("node is not installed")
    runtime = current_runtime_files("node")
    assert runtime.node is not None
    document = _read(_bundle(tmp_path, lang="node"), runtime)
    assert _trusted(document)[f"file:{runtime.node}"] == _sha256(runtime.node)
    assert document["loader"]["env"]["CONFIDE_NODE"] == str(runtime.node)


def test_runtime_files_where_the_enclave_mounts_its_own_are_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    for home in ("/tmp/python", "/job/python", "/lib"):
        files = RuntimeFiles(
            executable=Path(home) / "bin/python3",
            home=Path(home),
            python_path=(Path("/opt/site"),),
            ca_bundle=Path("/opt/site/cacert.pem"),
            files=(HostFile(Path(home) / "bin/python3", "00" * 32),),
        )
        with pytest.raises(GramineManifestError, match="install the interpreter elsewhere"):
            build_manifest(bundle, files, LAYOUT)


@RESERVED_CHECKOUT
def test_the_manifest_is_written_next_to_the_bundle_never_inside(
    tmp_path: Path, runtime: RuntimeFiles
) -> None:
    bundle = _bundle(tmp_path)
    assert default_output(bundle) == bundle.resolve().with_name(bundle.name + ".manifest")
    path = write_manifest(bundle, None, runtime, LAYOUT)
    assert path == default_output(bundle) and tomllib.loads(path.read_text())["sgx"]
    with pytest.raises(GramineManifestError, match="inside the bundle"):
        write_manifest(bundle, bundle / "x.manifest", runtime, LAYOUT)
    with pytest.raises(ConfideError, match="not a directory"):
        build_manifest(tmp_path / "missing", runtime, LAYOUT)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("manifest")(manifest_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the command's name
    return app


@RESERVED_CHECKOUT
def test_the_command_writes_the_manifest_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no Gramine there
    bundle = _bundle(tmp_path)
    out = tmp_path / "cubic.manifest"
    done = CliRunner().invoke(
        _cli(), ["manifest", str(bundle), "--tee", "sgx", "--out", str(out), "--json"]
    )
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["manifest"] == str(out) and answer["measurement"] is None
    assert "gramine-sgx-sign" in answer["missing"] and "install Gramine" in answer["missing"]
    assert tomllib.loads(out.read_text())["sgx"]["debug"] is False
    done = CliRunner().invoke(_cli(), ["manifest", str(bundle), "--tee", "tdx"])
    assert isinstance(done.exception, ConfideError)
    assert "docs/hardware.md" in str(done.exception)
