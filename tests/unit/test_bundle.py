"""App bundles: scaffold, manifest checks, and what the sim measurement depends on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from confide.bundle import init_bundle, measure_bundle, read_manifest
from confide.errors import AttestationError, ConfideError


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    init_bundle(tmp_path / "app", "python")
    return tmp_path / "app"


def _remeasure(bundle: Path) -> str:
    return str(measure_bundle(bundle))


def test_init_writes_exactly_the_manifest_and_app(tmp_path: Path) -> None:
    for lang, entry in (("python", "app.py"), ("node", "app.js"), ("native", "app.sh")):
        target = tmp_path / lang
        init_bundle(target, lang)
        assert sorted(p.name for p in target.iterdir()) == sorted(["confide-app.yml", entry])
        manifest = read_manifest(target)
        assert manifest.entrypoint == entry
        assert manifest.runtime == lang
        assert (manifest.heap, manifest.stack, manifest.threads) == (64 << 20, 8 << 20, 4)


def test_init_refuses_to_overwrite(bundle: Path) -> None:
    (bundle / "app.py").write_text("mine")
    with pytest.raises(ConfideError, match="already exists"):
        init_bundle(bundle, "python")
    assert (bundle / "app.py").read_text() == "mine"
    with pytest.raises(ConfideError, match="--lang is one of"):
        init_bundle(bundle.parent / "x", "cobol")


def test_scaffolded_python_app_follows_the_iexec_contract(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "iexec_out"
    env = {**os.environ, "IEXEC_OUT": str(out), "IEXEC_REQUESTER_SECRET_1": "s3cret"}
    proc = subprocess.run(
        [sys.executable, "app.py", "--n", "3"],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr + (out / "result.json").read_text()
    assert (out / "computed.json").exists()
    assert '"requester_secrets": [\n    "1"\n  ]' in (out / "result.json").read_text()


def test_a_native_app_is_an_executable_run_as_is(tmp_path: Path) -> None:
    """runtime: native: the scaffold's app.sh runs by itself and follows the contract;
    an entrypoint that is not executable is refused by name; its mode is measured."""
    native = tmp_path / "native"
    init_bundle(native, "native")
    out = tmp_path / "iexec_out"
    env = {**os.environ, "IEXEC_OUT": str(out), "IEXEC_REQUESTER_SECRET_1": "s3cret"}
    proc = subprocess.run(
        ["./app.sh", "a", "b"], cwd=native, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr + (out / "result.json").read_text()
    assert (out / "computed.json").exists()
    executable = _remeasure(native)
    (native / "app.sh").chmod(0o644)
    with pytest.raises(AttestationError, match=r"'app.sh' must be executable \(chmod \+x"):
        measure_bundle(native)
    (native / "app.sh").chmod(0o700)
    assert _remeasure(native) != executable  # the mode is part of what runs


def test_measurement_is_typed_and_stable(bundle: Path) -> None:
    first = _remeasure(bundle)
    assert first.startswith("sim:") and len(first) == 4 + 64
    os.utime(bundle / "app.py", (1, 1))  # touching does not change it
    assert _remeasure(bundle) == first


@pytest.mark.parametrize(
    "change",
    [
        lambda b: (b / "app.py").write_text((b / "app.py").read_text() + "\n# x\n"),
        lambda b: (b / "app.py").chmod(0o755),
        lambda b: (b / "extra.txt").write_text("x"),
        lambda b: _add(b, "__pycache__/m.pyc"),
        lambda b: _edit(b, "heap: 64M", "heap: 128M"),
        lambda b: _edit(b, "stack: 8M", "stack: 16M"),
        lambda b: _edit(b, "threads: 4", "threads: 8"),
        lambda b: _switch_entrypoint(b),  # noqa: PLW0108 (defined below: looked up late)
        lambda b: _edit(b, "runtime: python", "runtime: node"),
    ],
    ids=[
        "content",
        "mode",
        "new file",
        "pycache",
        "heap",
        "stack",
        "threads",
        "entrypoint",
        "runtime",
    ],
)
def test_measurement_changes_with_what_runs(bundle: Path, change: object) -> None:
    before = _remeasure(bundle)
    change(bundle)  # type: ignore[operator]
    assert _remeasure(bundle) != before


def _switch_entrypoint(bundle: Path) -> None:
    _add(bundle, "main.py")
    _edit(bundle, "entrypoint: app.py", "entrypoint: main.py")


def _add(bundle: Path, name: str) -> None:
    (bundle / name).parent.mkdir(parents=True, exist_ok=True)
    (bundle / name).write_text("x")


def _edit(bundle: Path, old: str, new: str) -> None:
    path = bundle / "confide-app.yml"
    path.write_text(path.read_text().replace(old, new))


def test_measurement_ignores_listing_order(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root, order in ((one, ["a", "b", "c"]), (two, ["c", "a", "b"])):
        init_bundle(root, "python", name="same")
        for name in order:
            (root / name).write_text(name)
    assert measure_bundle(one) == measure_bundle(two)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("threads: 4", "threads: 0"), "threads is a whole number"),
        (("heap: 64M", "heap: lots"), "a size is a number"),
        (("runtime: python", "runtime: ruby"), "runtime is one of"),
        (("entrypoint: app.py", "entrypoint: missing.py"), "is not a file of the bundle"),
        (("threads: 4", "threads: 4\nextra: 1"), "unknown field 'extra'"),
        (("threads: 4", ""), "missing field 'threads'"),
        (("name:", "name: [unclosed"), "cannot read"),
    ],
)
def test_bad_manifests(bundle: Path, edit: tuple[str, str], message: str) -> None:
    _edit(bundle, *edit)
    with pytest.raises(AttestationError, match=message):
        measure_bundle(bundle)


def test_not_a_bundle_and_links(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(AttestationError, match="app init"):
        measure_bundle(tmp_path)
    (bundle / "link").symlink_to("/etc/passwd")
    with pytest.raises(AttestationError, match="symbolic links"):
        measure_bundle(bundle)


def test_special_bits_and_empty_directories_count(bundle: Path) -> None:
    before = _remeasure(bundle)
    (bundle / "empty").mkdir()
    with_dir = _remeasure(bundle)
    assert with_dir != before
    (bundle / "empty").chmod(0o700)
    assert _remeasure(bundle) != with_dir
    (bundle / "app.py").chmod(0o4644)
    assert _remeasure(bundle) not in (before, with_dir)


def test_a_directory_that_cannot_be_read_fails_the_measurement(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_walk = os.walk

    def walk(top: str, onerror: object = None, **kw: object) -> object:
        error = PermissionError(13, "Permission denied", str(bundle / "json"))
        onerror(error)  # type: ignore[operator]
        return real_walk(top, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "walk", walk)
    with pytest.raises(AttestationError, match=r"cannot read .*json while measuring"):
        measure_bundle(bundle)


def test_duplicate_manifest_keys_are_refused(bundle: Path) -> None:
    _edit(bundle, "entrypoint: app.py", "entrypoint: app.py\nentrypoint: other.py")
    with pytest.raises(AttestationError, match="given twice"):
        measure_bundle(bundle)


@pytest.mark.parametrize("name", ["x\nentrypoint: other.py", "#", "a: b", "- list"])
def test_a_name_cannot_inject_manifest_fields(tmp_path: Path, name: str) -> None:
    init_bundle(tmp_path / "app", "python", name=name)
    manifest = read_manifest(tmp_path / "app")
    assert manifest.name == name
    assert manifest.entrypoint == "app.py"
