"""A real result, end to end: the embedded platform (hub, sms with sim, storage), a worker
running the real enclave runtime in the real sandbox, then the requester's side of
confide.results — grants from the hub, the blob from the storage, verify before decrypt,
safe extraction, logs — and nobody else's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.errors import ConfideError
from confide.results.fetch import (
    download_result,
    fetch_logs,
    kept_paths,
    read_document,
    request_grants,
)
from confide.results.verify import verify
from tests.integration.test_worker_support import (
    Pool,
    Up,
    running_up,
    start_worker,
    worker_config,
)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, str]]:
    root = tmp_path_factory.mktemp("results-flow")
    with running_up(root) as up:
        pool = Pool(up).deploy(logs=True)
        worker = start_worker(worker_config(pool, root / "worker", runner=None))
        try:
            task = pool.queue()
            view = pool.wait(task, {"COMPLETED", "FAILED", "TIMEOUT"}, timeout=120)
            assert view["status"] == "COMPLETED", (view, worker.errors)
            yield pool, task
        finally:
            worker.finish()


def _up(pool: Pool) -> Up:
    return pool.up


def test_download_verifies_then_extracts(done: tuple[Pool, str], tmp_path: Path) -> None:
    pool, task = done
    up = _up(pool)
    platform = up.platform(pool.requester, "r")
    key = up.root / "r" / "result-key"
    view = pool.task(task)
    fetched = download_result(platform, task, view, tmp_path, key_path=key, now=int(time.time()))
    assert fetched.verdict.ok, fetched.verdict.to_json()
    assert fetched.verdict.simulation
    names = {p.relative_to(tmp_path).as_posix() for p in fetched.downloaded}
    assert {f"{task}.zip", f"{task}.json", "computed.json", "result.json"} <= names
    computed = json.loads((tmp_path / "computed.json").read_text())
    assert "deterministic-output-path" in computed
    # offline, afterwards: strict without --allow-sim, and a changed file is caught
    stored, document_path = kept_paths(tmp_path, task)
    document = read_document(document_path)
    strict = verify(task, document, stored, now=int(time.time()), result_private_key_path=key)
    assert strict.failed is not None and strict.failed.name == "token-status"
    (tmp_path / "result.json").write_text("{}")
    changed = verify(
        task,
        document,
        stored,
        now=int(time.time()),
        allow_sim=True,
        result_private_key_path=key,
        extracted_dir=tmp_path,
    )
    assert changed.failed is not None and changed.failed.name == "extracted-files"


def test_logs_reach_the_requester_only(done: tuple[Pool, str]) -> None:
    pool, task = done
    up = _up(pool)
    view = pool.task(task)
    logs = fetch_logs(up.platform(pool.requester, "r"), task, view, up.root / "r" / "result-key")
    assert b"--- stdout" in logs
    with pytest.raises(ConfideError, match="requester"):
        request_grants(up.platform(pool.developer, "d"), task)
