"""The sms's OpenAPI description, served at ``/openapi.json``.

Written by hand next to the routes (Starlette has no schema generator of its own); a test
compares its paths and methods with the application's routes, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from confide import __version__

_SIGNED: list[dict[str, list[str]]] = [{"confideSignature": []}]
_PROBLEM = {
    "description": "refused (application/problem+json: type, title, status, detail)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_OWNER_NAME = [
    {"name": "owner", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
]
_SESSION_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["yaml"],
                "properties": {
                    "yaml": {"type": "string"},
                    "vars": {"type": "object", "additionalProperties": {"type": "string"}},
                    "source": {"type": "string"},
                },
            }
        }
    },
}


def _op(summary: str, *, signed: bool, ok: str, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: {"description": "success"}, "default": _PROBLEM},
    }
    if signed:
        operation["security"] = _SIGNED
    operation.update(extra)
    return operation


def openapi_document() -> dict[str, Any]:
    secret_params = [
        {"name": "address", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}},
    ]  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "confide sms", "version": __version__},
        "paths": {
            "/v1/info": {"get": _op("Service identity, audience and JWKS", signed=False, ok="200")},
            "/health": {"get": _op("Liveness", signed=False, ok="200")},
            "/openapi.json": {"get": _op("This description", signed=False, ok="200")},
            "/v1/requesters/{address}/secrets/{name}": {
                "put": _op(
                    "Store a requester secret (create-only unless ?update=true)",
                    signed=True,
                    ok="201",
                    parameters=secret_params,
                ),
                "head": _op(
                    "Whether the secret exists (never its value)",
                    signed=False,
                    ok="200",
                    parameters=secret_params,
                ),
            },
            "/v1/sessions": {
                "post": _op("Create a session", signed=True, ok="201", requestBody=_SESSION_BODY)
            },
            "/v1/sessions/{owner}/{name}": {
                "get": _op("The current session", signed=True, ok="200", parameters=_OWNER_NAME),
                "put": _op(
                    "Replace the session (predecessor: the current hash)",
                    signed=True,
                    ok="200",
                    parameters=_OWNER_NAME,
                    requestBody=_SESSION_BODY,
                ),
            },
            "/v1/sessions/{owner}/{name}/history": {
                "get": _op(
                    "Every version, oldest first", signed=True, ok="200", parameters=_OWNER_NAME
                )
            },
        },
        "components": {
            "securitySchemes": {
                "confideSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Confide-Signature",
                    "description": "EIP-191 signature over the canonical request, with "
                    "X-Confide-Address, X-Confide-Timestamp and X-Confide-Nonce "
                    "(docs/sms.md, Signed requests)",
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                }
            },
        },
    }
