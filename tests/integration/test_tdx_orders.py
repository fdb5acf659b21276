"""TDX task orders stay refused, naming why, until the TD image of docs/hardware.md can be
built and tested: the order check, a release and ``confide app run --tag tee,tdx`` (the
hub asks the sms's order check) all say so in the same words."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from confide.attestation.measurement import Measurement
from confide.errors import AuthError
from confide.sms.attest.orders import TDX_REFUSED
from confide.sms.tasks import TaskOrder
from tests.acceptance.test_cli_up_platform import Up, make_bundle, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal
from tests.integration.test_attest_tasks import (
    APP_ADDRESS,
    DEVELOPER,
    MEASUREMENT,
    REQUESTER,
    TaskWorld,
    task_world,
)

TD = Measurement.parse("tdx:" + "7d" * 48)


def _check(w: TaskWorld, order: TaskOrder) -> list[str]:
    body = {"order": order.to_json(), "signature": REQUESTER.sign_text(order.signing_message())}
    answer = httpx.post(w.base + "/v1/task-orders/check", json=body)
    assert answer.status_code == 200, answer.text
    problems: list[str] = answer.json()["problems"]
    return problems


def _release(w: TaskWorld, order: TaskOrder) -> list[str]:
    with pytest.raises(AuthError) as refused:
        w.run(w.publish(order))
    message = str(refused.value)
    assert "attestation refused: " in message, message
    return message.split("attestation refused: ", 1)[1].split("; ")


@pytest.mark.parametrize("which", ["tee", "measurement"])
def test_a_tdx_order_is_refused_by_the_check_and_the_release_naming_why(
    tmp_path: Path, database_url: str, which: str
) -> None:
    with task_world(tmp_path, database_url) as w:
        if which == "tee":  # a sim app asked to run on TDX
            order = w.order(tee=("tdx",), tolerate=())
        else:  # an app whose owner registered a tdx measurement
            w.registry.add_app(APP_ADDRESS, DEVELOPER.address, MEASUREMENT, TD)
            order = w.order(tee=("tdx",), tolerate=(), app_measurement=TD)
        problems = _check(w, order)
        assert TDX_REFUSED in problems
        assert _release(w, order) == problems


def test_sim_and_sgx_orders_are_not_refused_for_tdx(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:
        assert _check(w, w.order()) == []
        assert TDX_REFUSED not in _check(w, w.order(tee=("sgx",), tolerate=()))


def test_the_refusal_names_the_missing_pieces() -> None:
    for piece in ("MRTD", "RTMR", "dm-verity", "docs/hardware.md", "tee,sgx"):
        assert piece in TDX_REFUSED


def test_app_run_with_tag_tee_tdx_is_refused_naming_why(up: Up) -> None:  # noqa: F811
    up.wallet("tara")
    assert up.ok("tara", "requester", "push-secret", "x1", "--secret-value", "tara-x1")["name"]
    address = str(up.ok("tara", "app", "deploy", make_bundle(up, "tara", "tdx-app"))["address"])
    done = up.cli("tara", "app", "run", address, "--workerpool", "default", "--tag", "tee,tdx")
    assert_refusal(done, "TDX task orders are refused", "docs/hardware.md")
    assert up.ok("tara", "task", "list")["list"] == []  # nothing was queued
