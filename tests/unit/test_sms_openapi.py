"""The OpenAPI description and the routes cannot drift apart."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.routing import Route

from confide.sms.http import create_app
from confide.sms.openapi import openapi_document
from confide.sms.service import Sms, SmsConfig


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    sms = Sms(SmsConfig(home=tmp_path / "h", db_url=f"sqlite:///{tmp_path / 'db'}"))
    app = create_app(sms, time.time)
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set())
        if method != "HEAD" or "GET" not in (route.methods or set())  # Starlette adds HEAD
    }
    document = openapi_document()
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == described
    assert document["openapi"].startswith("3.1")
