"""The task lifecycle's rules (confide.hub.lifecycle), without a database."""

from __future__ import annotations

import pytest

from confide.errors import TaskError
from confide.hub.lifecycle import (
    CHAIN,
    FINAL,
    LIVE,
    STATUSES,
    IllegalTransitionError,
    check_path,
    check_report,
)


def test_each_status_reports_only_the_next_or_failed() -> None:
    for position, current in enumerate(CHAIN[1:-1], start=1):
        following = CHAIN[position + 1]
        check_report(current, following)
        check_report(current, "FAILED")
        for wanted in sorted(STATUSES - {following, "FAILED"}):
            with pytest.raises(IllegalTransitionError) as refused:
                check_report(current, wanted)
            assert f"{current} → {wanted}" in str(refused.value)


def test_final_statuses_are_final() -> None:
    assert {"COMPLETED", "FAILED", "TIMEOUT"} == FINAL
    for current in sorted(FINAL):
        for wanted in sorted(STATUSES):
            with pytest.raises(IllegalTransitionError, match=f"{current} → {wanted}"):
                check_report(current, wanted)


def test_timeout_is_the_hubs_and_statuses_are_known() -> None:
    with pytest.raises(IllegalTransitionError, match="set by the hub only"):
        check_report("COMPUTING", "TIMEOUT")
    with pytest.raises(TaskError, match="unknown status 'DONE'"):
        check_report("CLAIMED", "DONE")
    assert "RECEIVED" in LIVE and "COMPLETED" not in LIVE


def test_a_path_checks_every_step() -> None:
    assert check_path("CLAIMED", list(CHAIN[2:])) == "COMPLETED"
    assert check_path("COMPUTING", ["FAILED"]) == "FAILED"
    with pytest.raises(IllegalTransitionError, match="ATTESTING → POST_COMPUTE"):
        check_path("CLAIMED", ["PRE_COMPUTE", "ATTESTING", "POST_COMPUTE"])
    with pytest.raises(IllegalTransitionError, match="FAILED → PRE_COMPUTE"):
        check_path("CLAIMED", ["FAILED", "PRE_COMPUTE"])
