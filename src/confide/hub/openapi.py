"""The hub's OpenAPI description, served at ``/openapi.json`` (written by hand next to
the routes; a test compares its paths and methods with the application's routes)."""

from __future__ import annotations

from typing import Any

from confide import __version__

_SIGNED: list[dict[str, list[str]]] = [{"confideSignature": []}]
# (path, method, summary, signed, answers)
_OPERATIONS: list[tuple[str, str, str, bool, tuple[str, ...]]] = [
    (
        "/v1/info",
        "get",
        "The hub's identity, keys and services (proof with ?challenge=)",
        False,
        ("200",),
    ),
    ("/health", "get", "Liveness", False, ("200",)),
    ("/ready", "get", "Readiness: the database answers", False, ("200", "503")),
    ("/openapi.json", "get", "This document", False, ("200",)),
    (
        "/v1/records",
        "put",
        "Keep an owner-signed record (higher sequence)",
        True,
        ("200", "403", "409", "422"),
    ),
    ("/v1/records/{address}", "get", "A kept signed record", False, ("200", "404")),
    ("/v1/apps", "get", "Apps (?owner=)", False, ("200",)),
    ("/v1/datasets", "get", "Datasets (?owner=)", False, ("200",)),
    ("/v1/workerpools", "get", "Workerpools (?owner=)", False, ("200",)),
    ("/v1/apps/{address}", "get", "An app's view", False, ("200", "404")),
    ("/v1/datasets/{address}", "get", "A dataset's view", False, ("200", "404")),
    ("/v1/workerpools/{address}", "get", "A workerpool's view", False, ("200", "404")),
    (
        "/v1/tasks",
        "get",
        "Tasks (?requester= &workerpool= &status= &limit=), newest first",
        False,
        ("200",),
    ),
    (
        "/v1/tasks",
        "post",
        "Queue a requester-signed task order",
        True,
        ("200", "201", "403", "422", "429"),
    ),
    ("/v1/tasks/{task}", "get", "A task, its order and its lease", False, ("200", "404")),
    (
        "/v1/tasks/{task}/cancel",
        "post",
        "Cancel (the requester, before a final status)",
        True,
        ("200", "403", "404", "409"),
    ),
    (
        "/v1/tasks/{task}/heartbeat",
        "post",
        "Renew the lease (the lease holder)",
        True,
        ("200", "403", "404", "409"),
    ),
    (
        "/v1/tasks/{task}/status",
        "post",
        "Report a status (the lease holder)",
        True,
        ("200", "400", "403", "404", "409"),
    ),
    (
        "/v1/tasks/{task}/grants",
        "post",
        "Storage grants for the result and logs blobs (the requester)",
        True,
        ("200", "403", "404", "409"),
    ),
    (
        "/v1/tasks/{task}/release",
        "post",
        "Give the lease back (the lease holder): queued again at once",
        True,
        ("200", "403", "404", "409"),
    ),
    (
        "/v1/workerpools/{pool}/claim",
        "post",
        "Claim a task (a member; ?wait=0..20 long poll)",
        True,
        ("200", "204", "403", "404"),
    ),
]


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, signed, answers in _OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {code: {"description": code} for code in answers},
        }
        if signed:
            operation["security"] = _SIGNED
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        if names:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in names
            ]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "confide hub", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "confideSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Confide-Signature",
                    "description": "EIP-191 signed request (docs/architecture.md, Identities)",
                }
            }
        },
    }
