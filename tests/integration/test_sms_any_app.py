"""A dataset key for any app is an explicit policy (``any-app=true``), bound into the
value's associated data like every policy; without it, or an app measurement, the push is
refused; the app developer secret never takes it (SQLite and PostgreSQL, through HTTP)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from confide.client.sms import SmsClient
from confide.crypto.requests import sign_request
from confide.db import make_engine
from confide.db.schema import secrets
from confide.errors import SecretError
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig
from tests.integration.sms_server import audience_of
from tests.integration.test_sms_records import (
    APP,
    DATA_OWNER,
    DATASET,
    DATASET_KEY,
    DEVELOPER,
    World,
    world,
)


def _put_key(w: World, query: str, value: bytes = b"k") -> httpx.Response:
    path = f"/v1/datasets/{DATASET}/key"
    headers = sign_request(
        DATA_OWNER,
        audience=audience_of(w.base),
        method="PUT",
        path=path,
        query=query,
        content_type="application/octet-stream",
        body=value,
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    return httpx.put(f"{w.base}{path}?{query}", content=value, headers=headers)


def test_a_dataset_key_for_any_app_is_said_explicitly(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:  # the world pushed DATASET's key with any-app
        refused = _put_key(w, "tee=sgx&update=true")  # a policy that names no app
        assert refused.status_code == 400
        assert "or say any-app=true (CLI: --any-app)" in refused.json()["detail"]
        kept = _put_key(w, "update=true")  # a rotation without options keeps the policy
        assert kept.status_code == 201 and kept.json()["policy"]["any_app"] is True
        accepted = _put_key(w, "any-app=true&update=true", b"k2")
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["policy"]["any_app"] is True
        both = _put_key(w, "any-app=true&app=sim%3A" + "5a" * 32 + "&update=true")
        assert both.status_code == 400 and "contradict each other" in both.text
        # The app developer secret always names its measurements.
        with pytest.raises(SecretError, match="must name the app measurement"):
            SmsClient(w.base, wallet=DEVELOPER).push_app_secret(
                APP, b"d", update=True, policy=ReleasePolicy(any_app=True)
            )


def test_an_any_app_key_is_released_and_its_policy_is_bound(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        task_id = w.publish(w.order())
        dataset = w.run(task_id).config["dataset"]
        assert base64.b64decode(dataset["key"]) == DATASET_KEY
    # Tampering with the stored policy (dropping any_app) makes the value undecryptable.
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="test"))
    try:
        ref = SecretRef(DATA_OWNER.address, "dataset", "key", subject=DATASET)
        assert sms.secrets.release(ref).policy == ReleasePolicy(any_app=True)
        engine = make_engine(database_url)
        stored = json.dumps(ReleasePolicy(any_app=True).to_json(), sort_keys=True)
        assert ReleasePolicy.from_json(stored).any_app
        with engine.begin() as connection:
            changed = connection.execute(
                update(secrets).where(secrets.c.kind == "dataset").values(policy="")
            )
            assert changed.rowcount == 1
        engine.dispose()
        with pytest.raises(SecretError, match="release policy or another field altered"):
            sms.secrets.release(ref)
    finally:
        sms.engine.dispose()
