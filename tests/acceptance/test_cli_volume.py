"""``confide volume`` as a user types it: outputs, exit codes, files, and no leaks."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CONFIDE, SECRET_MARKER, assert_refusal, run_cli, tree_state


def _no_leak(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in (SECRET_MARKER.decode(), *secrets):
        assert secret not in proc.stdout
        assert secret not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_encrypt_makes_a_private_key_and_prints_only_the_tag(tmp_path: Path, source: Path) -> None:
    proc = run_cli("volume", "encrypt", "src", "vol", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    tag = proc.stdout.strip()
    assert len(tag) == 64 and int(tag, 16) >= 0
    key_file = tmp_path / "vol.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_hex = key_file.read_text().strip()
    assert "vol.key (new)" in proc.stderr
    _no_leak(proc, key_hex)

    verify = run_cli("volume", "verify", "vol", "--key-file", "vol.key", "--tag", tag, cwd=tmp_path)
    assert verify.returncode == 0 and "intact" in verify.stdout and "as expected" in verify.stdout
    decrypt = run_cli(
        "volume", "decrypt", "vol", "out", "--key-file", "vol.key", "--tag", tag, cwd=tmp_path
    )
    assert decrypt.returncode == 0, decrypt.stderr
    assert "decrypted 6 files" in decrypt.stdout
    _no_leak(decrypt, key_hex)
    assert tree_state(tmp_path / "out") == tree_state(source)


def test_json_outputs_are_single_documents(tmp_path: Path, source: Path) -> None:
    enc = run_cli(
        "volume", "encrypt", source, tmp_path / "vol", "--key-file", tmp_path / "k", "--json"
    )
    document = json.loads(enc.stdout)
    assert set(document) == {"tag", "key_file", "volume", "files", "bytes"}
    assert document["files"] == 6 and document["key_file"] == str(tmp_path / "k")
    assert enc.stderr == ""

    info = json.loads(run_cli("volume", "info", tmp_path / "vol", "--json").stdout)
    assert info["tag"] == document["tag"] and info["tag_verified"] is False
    assert info["objects"] == 6 and info["format_version"] == 1

    ver = json.loads(
        run_cli("volume", "verify", tmp_path / "vol", "--key-file", tmp_path / "k", "--json").stdout
    )
    assert ver == {"ok": True, "tag": document["tag"], "files": 6, "bytes": document["bytes"]}

    dec = run_cli(
        "volume",
        "decrypt",
        tmp_path / "vol",
        tmp_path / "out",
        "--key-file",
        tmp_path / "k",
        "--tag",
        document["tag"],
        "--json",
    )
    assert json.loads(dec.stdout) == {
        "tag": document["tag"],
        "destination": str(tmp_path / "out"),
        "files": 6,
        "bytes": document["bytes"],
    }


def test_existing_key_file_is_reused(tmp_path: Path, source: Path) -> None:
    first = run_cli("volume", "encrypt", source, tmp_path / "a", "--key-file", tmp_path / "k")
    key_hex = (tmp_path / "k").read_text()
    second = run_cli("volume", "encrypt", source, tmp_path / "b", "--key-file", tmp_path / "k")
    assert first.returncode == second.returncode == 0
    assert (tmp_path / "k").read_text() == key_hex
    assert "(new)" in first.stderr and "(new)" not in second.stderr
    check = run_cli("volume", "verify", tmp_path / "b", "--key-file", tmp_path / "k")
    assert check.returncode == 0


def test_default_key_file_is_never_overwritten(tmp_path: Path, source: Path) -> None:
    (tmp_path / "vol.key").write_text("a" * 64 + "\n")
    proc = run_cli("volume", "encrypt", "src", "vol", cwd=tmp_path)
    assert_refusal(proc, "vol.key already exists", "--key-file vol.key")
    assert not (tmp_path / "vol").exists()
    assert (tmp_path / "vol.key").read_text() == "a" * 64 + "\n"


def test_failed_encrypt_removes_the_key_it_created(tmp_path: Path) -> None:
    proc = run_cli("volume", "encrypt", "missing", "vol", cwd=tmp_path)
    assert_refusal(proc, "missing does not exist")
    assert sorted(os.listdir(tmp_path)) == []


def test_wrong_key_refusal_in_text_and_json(tmp_path: Path, source: Path) -> None:
    run_cli("volume", "encrypt", source, tmp_path / "vol")
    other = tmp_path / "other.key"
    other.write_text("ab" * 32 + "\n")
    other.chmod(0o600)
    proc = run_cli("volume", "decrypt", tmp_path / "vol", tmp_path / "out", "--key-file", other)
    assert_refusal(proc, f"volume {tmp_path / 'vol'}", "wrong key")
    assert proc.stdout == ""
    as_json = run_cli("volume", "verify", tmp_path / "vol", "--key-file", other, "--json")
    assert_refusal(as_json, "wrong key")
    assert json.loads(as_json.stdout)["ok"] is False
    assert not (tmp_path / "out").exists()


def test_tampered_object_names_volume_and_file(tmp_path: Path, source: Path) -> None:
    run_cli("volume", "encrypt", source, tmp_path / "vol", "--key-file", tmp_path / "k")
    objects = sorted((tmp_path / "vol/objects").iterdir(), key=lambda p: p.stat().st_size)
    target = objects[-1]  # the largest object: three-segments.bin
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    proc = run_cli("volume", "verify", tmp_path / "vol", "--key-file", tmp_path / "k")
    assert_refusal(proc, str(tmp_path / "vol"), "three-segments.bin", "failed authentication")


def test_rollback_is_refused_with_tag(tmp_path: Path, source: Path) -> None:
    old = run_cli("volume", "encrypt", source, tmp_path / "v1", "--key-file", tmp_path / "k")
    new = run_cli("volume", "encrypt", source, tmp_path / "v2", "--key-file", tmp_path / "k")
    proc = run_cli(
        "volume",
        "decrypt",
        tmp_path / "v1",
        tmp_path / "out",
        "--key-file",
        tmp_path / "k",
        "--tag",
        new.stdout.strip(),
    )
    assert_refusal(proc, old.stdout.strip(), "rolled back")
    assert not (tmp_path / "out").exists()


def test_non_empty_destination_refused_then_forced(tmp_path: Path, source: Path) -> None:
    run_cli("volume", "encrypt", source, tmp_path / "vol", "--key-file", tmp_path / "k")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/keep").write_text("x")
    proc = run_cli(
        "volume", "decrypt", tmp_path / "vol", tmp_path / "out", "--key-file", tmp_path / "k"
    )
    assert_refusal(proc, "not empty", "--force")
    assert (tmp_path / "out/keep").read_text() == "x"
    forced = run_cli(
        "volume",
        "decrypt",
        tmp_path / "vol",
        tmp_path / "out",
        "--key-file",
        tmp_path / "k",
        "--force",
    )
    assert forced.returncode == 0
    assert tree_state(tmp_path / "out") == tree_state(source)


@pytest.mark.parametrize(
    "args",
    [
        ["volume", "decrypt", "v", "o"],  # --key-file missing
        ["volume", "verify", "v", "--key-file", "k", "--tag", "nothex"],
        ["volume", "encrypt", "a"],
        ["volume", "frobnicate"],
        ["volume", "info", "v", "--no-such-option"],
    ],
)
def test_command_lines_that_do_not_parse_exit_2(tmp_path: Path, args: list[str]) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    as_json = run_cli(*args, "--json", cwd=tmp_path)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout) == {"ok": False, "error": "the command line does not parse"}


def test_malformed_and_unsafe_key_files(tmp_path: Path, source: Path) -> None:
    run_cli("volume", "encrypt", source, tmp_path / "vol", "--key-file", tmp_path / "k")
    (tmp_path / "bad").write_text("not a key, but maybe a secret\n")
    proc = run_cli("volume", "verify", tmp_path / "vol", "--key-file", tmp_path / "bad")
    assert_refusal(proc, "malformed")
    assert "maybe a secret" not in proc.stderr
    (tmp_path / "k").chmod(0o644)
    loose = run_cli("volume", "verify", tmp_path / "vol", "--key-file", tmp_path / "k")
    assert loose.returncode == 0
    assert "warning: key file" in loose.stderr and "chmod 600" in loose.stderr


def test_info_on_something_that_is_not_a_volume(tmp_path: Path) -> None:
    assert_refusal(run_cli("volume", "info", tmp_path), "not a confide volume")


def test_help_is_actionable() -> None:
    for args in (
        ["--help"],
        ["volume", "--help"],
        ["volume", "encrypt", "--help"],
        ["volume", "decrypt", "--help"],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 0
    decrypt_help = run_cli("volume", "decrypt", "--help").stdout
    for option in ("--key-file", "--tag", "--force", "--json"):
        assert option in decrypt_help
    assert run_cli("--version").stdout.startswith("confide ")


def test_progress_bar_only_on_a_terminal(tmp_path: Path, source: Path) -> None:
    (source / "bulk").write_bytes(os.urandom(8 << 20))
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [*CONFIDE, "volume", "encrypt", str(source), str(tmp_path / "vol")],
            stdout=subprocess.PIPE,
            stderr=terminal,
            check=False,
            timeout=60,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert b"encrypting" in drawn  # the bar, on the terminal
    assert len(proc.stdout.strip()) == 64  # stdout still holds only the tag


def test_no_command_ever_prints_the_key_or_plaintext(tmp_path: Path, source: Path) -> None:
    """Every volume command, in text and JSON mode, succeeding and refusing."""
    run_cli("volume", "encrypt", source, tmp_path / "vol", "--key-file", tmp_path / "k")
    key_hex = (tmp_path / "k").read_text().strip()
    wrong = tmp_path / "wrong"
    wrong.write_text("cd" * 32 + "\n")
    wrong.chmod(0o600)
    outputs: list[subprocess.CompletedProcess[str]] = []
    for extra in ([], ["--json"]):
        for key in (tmp_path / "k", wrong):
            outputs += [
                run_cli("volume", "verify", tmp_path / "vol", "--key-file", key, *extra),
                run_cli(
                    "volume",
                    "decrypt",
                    tmp_path / "vol",
                    tmp_path / f"o{len(outputs)}",
                    "--key-file",
                    key,
                    *extra,
                ),
            ]
        outputs.append(run_cli("volume", "info", tmp_path / "vol", *extra))
        outputs.append(
            run_cli(
                "volume",
                "encrypt",
                source,
                tmp_path / f"v{len(outputs)}",
                "--key-file",
                tmp_path / "k",
                *extra,
            )
        )
    assert {p.returncode for p in outputs} == {0, 1}
    for proc in outputs:
        _no_leak(proc, key_hex, "cd" * 32)
