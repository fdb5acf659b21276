"""What the sms reads of an untrusted hub's answers: bounded in size and nesting."""

from __future__ import annotations

import httpx
import pytest

from confide.sms.hub_registry import MAX_ANSWER_BYTES, HttpRecordSource
from confide.sms.registry import HubUnavailableError


def _source(body: bytes, status: int = 200) -> HttpRecordSource:
    source = HttpRecordSource("http://hub.test")
    source._client = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    )
    return source


def test_an_answer_too_large_is_refused_unread() -> None:
    with pytest.raises(HubUnavailableError, match=f"more than {MAX_ANSWER_BYTES} bytes"):
        _source(b'{"x": "' + b"a" * (MAX_ANSWER_BYTES + 10) + b'"}').fetch_task("0x" + "1" * 64)


def test_an_answer_nested_too_deep_is_refused() -> None:
    with pytest.raises(HubUnavailableError, match="no JSON"):
        _source(b"[" * 100_000 + b"]" * 100_000).fetch_task("0x" + "1" * 64)


def test_a_plain_answer_and_a_404_are_read() -> None:
    assert _source(b'{"task": "x"}').fetch_task("0x" + "1" * 64) == {"task": "x"}
    assert _source(b"", status=404).fetch_task("0x" + "1" * 64) is None
    with pytest.raises(HubUnavailableError, match="answered 500"):
        _source(b"", status=500).fetch_task("0x" + "1" * 64)
