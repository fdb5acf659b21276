"""The runtime's small decisions: redaction, computed.json paths, input names, job.json."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from confide.attestation.measurement import Measurement
from confide.crypto.keys import SymmetricKey
from confide.crypto.wallet import Wallet
from confide.errors import ConfideError
from confide.runtime.inputs import check_url, input_name
from confide.runtime.job import load_job
from confide.runtime.main import run_job
from confide.runtime.postcompute import app_logs, check_computed
from confide.runtime.precompute import TEE_ENV, dataset_key, prepare_bundle
from confide.runtime.stages import (
    APP_COMPUTE_FAILED,
    ATTESTATION_FAILED,
    POST_COMPUTE_FAILED,
    PRE_COMPUTE_FAILED,
    SEE_ERROR_TXT,
    Outcome,
    Progress,
    Redactor,
    TaskFailure,
    public_error,
)
from confide.sandbox import Finished
from confide.sms.tasks import TaskOrder

REQUESTER = Wallet.generate()


def test_redaction_replaces_every_value_and_drops_a_cut_tails_beginning() -> None:
    redactor = Redactor([b"s3cret-value", b"s3cret", b""])
    assert redactor.bytes(b"a s3cret-value b s3cret c") == b"a [redacted] b [redacted] c"
    assert redactor.bytes(b"et-value then") == b"et-value then"
    assert redactor.text("x=s3cret") == "x=[redacted]"
    # The tail of a longer output may start in the middle of a value: its beginning goes,
    # whatever it holds, up to a line start past the longest value's length (12 here).
    assert redactor.bytes(b"et-value then\nnext line\n", cut=True) == b"next line\n"
    assert redactor.bytes(b"0123456789abcdef", cut=True) == b"cdef"  # no line start
    assert redactor.bytes(b"x\n0123456789a\nkept\n", cut=True) == b"kept\n"
    assert Redactor().bytes(b"partial\nwhole\n", cut=True) == b"whole\n"


def test_a_cut_tail_is_no_oracle_on_a_secrets_suffix() -> None:
    """An app that echoes its requester's input, padded so that the kept tail starts at a
    chosen offset, learns nothing from whether the mark appears (no suffix is matched)."""
    secret = b"2;0;-1;5"
    redactor = Redactor([secret])
    for size in range(1, len(secret)):
        for guess in (secret[-size:], b"x" * size):
            tail = guess + b" echoed\nmore output\n"
            assert redactor.bytes(tail, cut=True) == b"more output\n", (size, guess)
    stdout = b"5 echoed\n" + b"B" * (100_000 - 10) + b"\n"  # exactly the kept 100 kB
    finished = Finished(0, False, None, stdout, b"ok\n")
    logs = app_logs(finished, redactor)
    assert b"[redacted]" not in logs and b"5 echoed" not in logs
    assert logs.startswith(b"--- stdout (last 100 kB, from a line start) ---\n")
    assert logs.endswith(b"--- stderr ---\nok\n")


def test_the_public_error_is_fixed_runtime_text() -> None:
    """report.json's error (published by the hub) never carries the detailed reason once
    secrets were released: paths, file names, exit codes stay in error.txt."""
    leak = "deterministic-output-path '/x/323b303b2d313b35' lies outside IEXEC_OUT"
    progress = Progress(None, stages={"PRE_COMPUTE": 1.0, "ATTESTING": 2.0, "COMPUTING": 3.0})
    for cause in (APP_COMPUTE_FAILED, POST_COMPUTE_FAILED, PRE_COMPUTE_FAILED):
        outcome = Outcome()
        outcome.fail(TaskFailure(cause, leak), Redactor())
        assert outcome.error == leak  # the detail, for error.txt
        public = public_error(outcome, progress)
        assert public is not None and "323b" not in public and "/x/" not in public
        outcome.statement = {"outcome": f"failed:{cause}"}
        assert public_error(outcome, progress) == f"{public}; {SEE_ERROR_TXT}"
    # Before anything was released (no app ran), the runtime's reason is shown in full.
    early = Outcome()
    early.fail(TaskFailure(PRE_COMPUTE_FAILED, "input file 1: its SHA-256 is 00"), Redactor())
    shown = public_error(early, Progress(None, stages={"PRE_COMPUTE": 1.0}))
    assert shown == "pre-compute failed: input file 1: its SHA-256 is 00"
    refused = Outcome()
    refused.fail(TaskFailure(ATTESTATION_FAILED, "attestation refused: no"), Redactor())
    attesting = Progress(None, stages={"PRE_COMPUTE": 1.0, "ATTESTING": 2.0})
    assert public_error(refused, attesting) == "the attestation failed: attestation refused: no"
    assert public_error(Outcome(status="COMPLETED"), progress) is None


def test_timings_are_rounded_to_10_ms() -> None:
    progress = Progress(None)
    progress.start("app")
    progress.stop("app")
    progress.enter("PRE_COMPUTE")
    for value in (*progress.timings.values(), *progress.stages.values()):
        assert round(value, 2) == value


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/iexec_out/result.txt", True),
        ("result.txt", True),
        ("/iexec_out", True),
        ("/iexec_out/../etc/passwd", False),
        ("/etc/passwd", False),
        ("../x", False),
        ("/iexec_outside/x", False),
        ("link", False),  # a symlink out of IEXEC_OUT
        ("missing.txt", False),
    ],
)
def test_deterministic_output_path(tmp_path: Path, path: str, ok: bool) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.txt").write_text("56")
    (out / "link").symlink_to("/etc")
    (out / "computed.json").write_text(json.dumps({"deterministic-output-path": path}))
    if ok:
        check_computed(out)
    else:
        with pytest.raises(TaskFailure) as failure:
            check_computed(out)
        assert failure.value.cause == "POST_COMPUTE_FAILED"


def test_computed_json_must_be_a_file_and_an_object(tmp_path: Path) -> None:
    with pytest.raises(TaskFailure, match=r"no computed\.json"):
        check_computed(tmp_path)
    (tmp_path / "computed.json").write_text("[1]")
    with pytest.raises(TaskFailure, match="not a JSON object"):
        check_computed(tmp_path)
    (tmp_path / "computed.json").write_text('{"callback-data": "0x01"}')
    check_computed(tmp_path)
    (tmp_path / "computed.json").unlink()
    (tmp_path / "computed.json").symlink_to("/etc/hostname")
    with pytest.raises(TaskFailure, match="not a regular file"):
        check_computed(tmp_path)


def test_input_names_and_urls() -> None:
    import httpx

    assert input_name("https://example.org/data/table.csv?x=1", 1) == "table.csv"
    assert input_name("https://example.org/", 2) == "input-2"
    assert input_name("https://example.org/a/%2e%2e", 3) == "input-3"
    assert input_name("https://example.org/.hidden", 4) == "input-4"
    check_url(httpx.URL("https://example.org/x"), allow_loopback=False)
    for url, why in (
        ("http://example.org/x", "not https"),
        ("https://user:pw@example.org/x", "credentials"),
        ("https://169.254.169.254/x", "link-local"),
        ("https://[::ffff:10.0.0.1]/x", "IPv4-mapped"),
    ):
        with pytest.raises(TaskFailure, match=why):
            check_url(httpx.URL(url), allow_loopback=False)
    check_url(httpx.URL("http://127.0.0.1:8/x"), allow_loopback=True)


def _job(tmp_path: Path, **changes: Any) -> Path:
    order = TaskOrder(
        requester=REQUESTER.address,
        app="0x" + "a1" * 20,
        app_measurement=Measurement.parse("sim:" + "5a" * 32),
        tee=("sim",),
        tolerate=("simulation",),
        ignore_advisories=(),
        secrets=(),
        dataset=None,
        result_key="ab" * 32,
        sms_key="cd" * 32,
        workerpool="0x" + "9e" * 20,
        salt=os.urandom(16).hex(),
        valid_until=int(time.time()) + 3600,
    )
    document: dict[str, Any] = {
        "format": "confide-job-v1",
        "task": order.task_id(),
        "lease_token": "lease",
        "order": order.to_json(),
        "signature": REQUESTER.sign_text(order.signing_message()),
        "worker": "0x" + "77" * 20,
        "sms_url": "http://127.0.0.1:1",
        "storage_url": "http://127.0.0.1:2",
        "tee": "sim",
        "sim_platform_key": "11" * 32,
        "app_logs": True,
        "deadline": int(time.time()) + 60,
        "relay_fd": 3,
        "allow_loopback_inputs": False,
        "limits": {"memory_bytes": 1 << 30, "tmpfs_bytes": 1 << 26},
    }
    document.update(changes)
    directory = tmp_path / "job"
    directory.mkdir()
    (directory / "job.json").write_text(json.dumps(document))
    return directory


def test_a_good_job_loads(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path))
    assert job.tee == "sim" and job.relay_fd == 3 and job.sim_platform_key is not None
    assert "11" * 32 not in repr(job)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"task": "0x" + "00" * 32}, "not the task"),
        ({"signature": Wallet.generate().sign_text("x")}, "not signed by its requester"),
        ({"tee": "sgx", "sim_platform_key": None}, "not one the order allows"),
        ({"sim_platform_key": "zz"}, "sim_platform_key"),
        ({"relay_fd": True}, "relay_fd"),
        ({"format": "other"}, "format"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_a_bad_job_is_refused(tmp_path: Path, changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfideError, match=match):
        load_job(_job(tmp_path, **changes))


def test_on_sgx_only_the_enclaves_own_bundle_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job.json's tee is the worker's word: on hardware the runtime must be inside the
    enclave its manifest describes (CONFIDE_TEE, measured) and runs the bundle at /app."""
    job = dataclasses.replace(load_job(_job(tmp_path)), tee="sgx", sim_platform_key=None)
    monkeypatch.delenv(TEE_ENV, raising=False)
    with pytest.raises(TaskFailure, match="not inside its enclave") as failure:
        prepare_bundle(job, tmp_path)
    assert failure.value.cause == "ATTESTATION_FAILED"
    monkeypatch.setenv(TEE_ENV, "sgx")
    with pytest.raises(TaskFailure, match="the enclave's bundle"):
        prepare_bundle(job, tmp_path)  # no /app here


def test_a_job_without_a_usable_relay_is_reported(tmp_path: Path) -> None:
    directory = _job(tmp_path, relay_fd=999)
    assert run_job(directory) == 0
    report = json.loads((directory / "out" / "report.json").read_text())
    assert report["status"] == "FAILED" and report["cause"] == "PRE_COMPUTE_FAILED"
    assert "relay descriptor 999 is not usable" in report["error"]


def test_the_released_dataset_key_is_raw_or_a_key_file() -> None:
    key = SymmetricKey.generate()
    for released in (key.expose(), (key.to_hex() + "\n").encode()):
        config = {"dataset": {"key": base64.b64encode(released).decode()}}
        assert dataset_key(config).expose() == key.expose()
    bad: list[dict[str, Any]] = [{"dataset": None}, {"dataset": {"key": "%%"}}]
    for wrong in [*bad, {"dataset": {"key": "AAAA"}}]:
        with pytest.raises(TaskFailure) as failure:
            dataset_key(wrong)
        assert failure.value.cause == "PRE_COMPUTE_FAILED"


def test_outputs_never_follow_a_link_the_worker_planted(tmp_path: Path) -> None:
    from confide.runtime.stages import write_out

    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "private.txt"
    victim.write_text("the runtime's own file")
    (out / ".report.json.partial").symlink_to(victim)  # planted at the partial name
    (out / "report.json").symlink_to(victim)  # and at the final name
    write_out(out, "report.json", b"{}\n")
    assert victim.read_text() == "the runtime's own file"
    assert not (out / "report.json").is_symlink()
    assert (out / "report.json").read_bytes() == b"{}\n"
    assert not (out / ".report.json.partial").exists()
    source = tmp_path / "built.zip"
    source.write_bytes(b"PK" * 1000)
    write_out(out, "result.zip", source)
    assert (out / "result.zip").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(("probed", "cause"), [(None, "app"), ("bwrap: broken", "sandbox")])
def test_a_failed_run_in_the_workers_kind_is_told_apart_from_the_apps_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probed: str | None, cause: str
) -> None:
    """The runtime runs the app in the kind the worker named, without a probe first; a
    run that fails is probed then: a sandbox that cannot start is APP_COMPUTE_FAILED
    naming it, an app that failed in a working sandbox is the app's own outcome."""
    from confide.bundle import init_bundle, read_manifest
    from confide.runtime import compute
    from confide.runtime.precompute import Bundle
    from confide.sandbox import runner

    job = load_job(_job(tmp_path))
    init_bundle(tmp_path / "app", "python")
    bundle = Bundle(tmp_path / "app", read_manifest(tmp_path / "app"))
    failed = Finished(1, False, "exit", b"", b"")
    calls: list[dict[str, Any]] = []

    def fake_run(spec: Any, **options: Any) -> Finished:
        calls.append(options)
        return failed

    monkeypatch.setenv("CONFIDE_SANDBOX", "bwrap")
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(runner, "probe_kind", lambda kind: probed)
    if cause == "app":
        assert compute.run_app(job, bundle, tmp_path, tmp_path, {}, ("true",)) is failed
    else:
        with pytest.raises(TaskFailure, match="the bwrap sandbox does not work here") as caught:
            compute.run_app(job, bundle, tmp_path, tmp_path, {}, ("true",))
        assert caught.value.cause == APP_COMPUTE_FAILED
    assert calls == [{"kind": "bwrap", "probe": False}]
