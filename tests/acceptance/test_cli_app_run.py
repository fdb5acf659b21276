"""``confide app run``: every malformed option, and a secret that does not exist, fails
before anything is created (exit 1, one ``error:`` line naming it): no task, no result
key made or registered. And the orders it makes pin what they must."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.test_cli_up_platform import Up, make_bundle, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal

GOOD = "0x" + "12" * 32


@pytest.fixture(scope="module")
def app(up: Up) -> str:  # noqa: F811
    up.wallet("dave")
    assert up.ok("dave", "requester", "push-secret", "x1", "--secret-value", "dave-x1-value")
    return str(up.ok("dave", "app", "deploy", make_bundle(up, "dave", "runner"))["address"])


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--secret", "1="], "--secret '1='"),
        (["--secret", "0=x1"], "--secret '0=x1'"),
        (["--secret", "a=b"], "--secret 'a=b'"),
        (["--secret", "1=x1 1=x1"], "index 1 is already mapped"),
        (["--secret", "1=x1", "--secret", "1=x2"], "index 1 is already mapped"),
        (["--secret", "x1"], "--secret 'x1'"),
        (["--secret", "1=x1", "0=y"], "--secret '0=y'"),
        (["--secret", "1=x1", "1=x1"], "index 1 is already mapped"),
        (["stray"], "unexpected argument(s): stray"),
        (["--secret", "1001=x1"], "--secret '1001=x1'"),
        (["--secret", "1=bad/name"], "secret name 'bad/name'"),
        (["--secret", " "], "without an index=name"),
        (["--secret", "2=missing-one"], "'missing-one'"),
        (["--secret", "1=x1 2=missing-two"], "'missing-two'"),
        (["--valid-for", "8d"], "at most 7 days"),
        (["--valid-for", "0h"], "--valid-for '0h'"),
        (["--valid-for", "soon"], "--valid-for 'soon'"),
        (["--valid-for", "1h-5m"], "--valid-for '1h-5m'"),
        (["--tag", "tee,foo"], "--tag 'tee,foo'"),
        (["--tag", "sgx"], "--tag 'sgx'"),
        (["--category", "XXL"], "--category 'XXL'"),
        (["--max-attempts", "0"], "--max-attempts"),
        (["--max-attempts", "11"], "--max-attempts"),
        (["--input-files", "https://example.org/a.csv"], "URL#sha256"),
        (["--input-files", "ftp://example.org/a#sha256=" + "ab" * 32], "not http(s)"),
        (["--input-files", "https://e.org/a#sha256=abc"], "URL#sha256"),
        (["--args", "x" * 4097], "--args"),
        (["--dataset", "0x" + "de" * 20], "knows no dataset"),
        (["--workerpool", "no-such-pool"], "no workerpool named 'no-such-pool'"),
    ],
)
def test_a_malformed_run_fails_before_anything_is_created(
    up: Up,  # noqa: F811
    app: str,
    options: list[str],
    named: str,
) -> None:
    args = ["app", "run", app, "--workerpool", "default", *options]
    if "--workerpool" in options:
        args = ["app", "run", app, *options]
    done = up.cli("dave", *args)
    assert_refusal(done, named)
    as_json = up.cli("dave", *args, "--json")
    assert as_json.returncode == 1 and '"ok": false' in as_json.stdout
    assert not (Path(up.env("dave")["CONFIDE_HOME"]) / "result-key").exists()


def test_no_refused_run_queued_a_task(up: Up, app: str) -> None:  # noqa: F811
    assert up.ok("dave", "task", "list")["list"] == []


def test_an_unknown_app_is_refused_naming_it(up: Up) -> None:  # noqa: F811
    up.wallet("erin")
    unknown = "0x" + "0a" * 20
    assert_refusal(up.cli("erin", "app", "run", unknown, "--workerpool", "default"), unknown)
    done = up.cli("erin", "app", "run", "nonsense", "--workerpool", "default")
    assert_refusal(done, "no app named 'nonsense'")


def test_a_run_without_a_workerpool_does_not_parse(up: Up, app: str) -> None:  # noqa: F811
    done = up.cli("dave", "app", "run", app)
    assert done.returncode == 2 and "--workerpool" in done.stderr


def test_orders_pin_their_options_and_the_same_mapping_forms_agree(
    up: Up,  # noqa: F811
    app: str,
) -> None:
    up.ok("dave", "requester", "push-secret", "y3", "--secret-value", "dave-y3-value")
    one = up.ok(
        "dave",
        "app",
        "run",
        app,
        "--workerpool",
        "default",
        "--secret",
        "1=x1",
        "3=y3",
        "--input-files",
        f"https://example.org/a.csv#sha256={GOOD[2:]}",
        "--tag",
        "tee,sim",
        "--max-attempts",
        "5",
        "--valid-for",
        "1d12h",
    )
    two = up.ok(
        "dave",
        "app",
        "run",
        app,
        "--workerpool",
        "default",
        "--secret",
        "3=y3",
        "--secret",
        "1=x1",
    )
    first = up.ok("dave", "task", "show", str(one["task"]))["order"]
    second = up.ok("dave", "task", "show", str(two["task"]))["order"]
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["secrets"] == second["secrets"] == {"1": "x1", "3": "y3"}
    assert first["input_files"] == [{"url": "https://example.org/a.csv", "sha256": GOOD[2:]}]
    assert first["max_attempts"] == 5 and second["max_attempts"] == 3
    assert 36 * 3600 - 120 < first["valid_until"] - second["valid_until"] + 3600 < 36 * 3600 + 120
    assert first["result_key"] == second["result_key"] is not None
    key = Path(up.env("dave")["CONFIDE_HOME"]) / "result-key"
    assert key.exists()
    for output in up.outputs:
        assert "dave-x1-value" not in output and "dave-y3-value" not in output
