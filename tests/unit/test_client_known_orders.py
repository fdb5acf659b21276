"""The orders a user signed, kept by the CLI so a cancel reaches the sms without the hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confide.attestation.measurement import Measurement
from confide.client.known import recall_order, remember_order
from confide.crypto.wallet import Wallet
from confide.sms.tasks import TaskOrder

REQUESTER = Wallet.generate()


def _order() -> TaskOrder:
    return TaskOrder(
        requester=REQUESTER.address,
        app="0x" + "a" * 40,
        app_measurement=Measurement.parse("sim:" + "1" * 64),
        tee=("sim",),
        tolerate=("simulation",),
        ignore_advisories=(),
        secrets=((1, "x1"),),
        dataset=None,
        result_key=None,
        encrypt_result=False,
        sms_key="2" * 64,
        workerpool="0x" + "b" * 40,
        salt="3" * 32,
        valid_until=int(time.time()) + 3600,
    )


def test_a_kept_order_is_recalled_by_its_task_and_a_tampered_one_is_not(tmp_path: Path) -> None:
    order = _order()
    signature = order.sign(REQUESTER)
    remember_order(tmp_path, order, signature)
    assert recall_order(tmp_path, order.task_id()) == (order, signature)
    assert recall_order(tmp_path, "0x" + "f" * 64) is None
    assert recall_order(tmp_path, "../etc/passwd") is None
    path = tmp_path / f"{order.task_id()}.json"
    document = json.loads(path.read_text())
    document["order"]["args"] = "--other"  # no longer the order of that task
    path.write_text(json.dumps(document))
    assert recall_order(tmp_path, order.task_id()) is None
    path.write_text("not json")
    assert recall_order(tmp_path, order.task_id()) is None
