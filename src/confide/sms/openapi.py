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
    "description": "at most 256 KiB",
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


def _query(name: str, description: str, *, repeatable: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "array", "items": {"type": "string"}}
        if repeatable
        else {"type": "string"},
        "explode": True,
    }


def _path(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
    }


_UPDATE = _query("update", "true: add a version of an existing secret (else create-only, 409)")
_POLICY = [
    _query(
        "tee",
        "TEE types that may receive it, comma-separated (sgx,tdx,sim); "
        "default: hardware, sim only where the sms allows it",
    ),
    _query("tolerate", "tolerated platform weaknesses, comma-separated (e.g. outdated-tcb)"),
]
_RESTRICTIONS = [
    _query("app", "only to these app measurements (typed, e.g. sgx:<64 hex>)", repeatable=True),
    _query("requester", "only for tasks of these requesters (addresses)", repeatable=True),
    _query("workerpool", "only on these workerpools (addresses)", repeatable=True),
]
_VALUE_BODY = {
    "required": True,
    "content": {
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "maxLength": 65536}
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


def _existence(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """A public HEAD existence check: 200 or 404, neither with a body."""
    operation = _op(summary, signed=False, ok="200", parameters=parameters)
    operation["responses"]["404"] = {"description": "does not exist (no body)"}
    return operation


def openapi_document() -> dict[str, Any]:
    secret_params = [
        {"name": "address", "in": "path", "required": True, "schema": {"type": "string"}},
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        },
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "confide sms", "version": __version__},
        "paths": {
            "/v1/info": {
                "get": _op(
                    "Service identity, audience and JWKS; with ?challenge=, also a proof: the "
                    "token key's signature over the challenge and this document",
                    signed=False,
                    ok="200",
                    parameters=[
                        {
                            "name": "challenge",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                        }
                    ],
                )
            },
            "/health": {"get": _op("Liveness", signed=False, ok="200")},
            "/ready": {
                "get": _op(
                    "Readiness: 200 when the database answers, else 503", signed=False, ok="200"
                )
            },
            "/openapi.json": {"get": _op("This description", signed=False, ok="200")},
            "/v1/requesters/{address}/secrets/{name}": {
                "put": _op(
                    "Store a requester secret (create-only unless ?update=true)",
                    signed=True,
                    ok="201",
                    parameters=[*secret_params, _UPDATE, *_POLICY],
                    requestBody=_VALUE_BODY,
                ),
                "head": _existence("Whether the secret exists (never its value)", secret_params),
            },
            "/v1/requesters/{address}/result-key": {
                "get": _op(
                    "The requester's result-encryption public key: {address, public_key, "
                    "sha256, version}",
                    signed=False,
                    ok="200",
                    parameters=[_path("address")],
                ),
                "put": _op(
                    "Store a new version of the result-encryption key (raw 32-byte X25519)",
                    signed=True,
                    ok="201",
                    parameters=[_path("address")],
                    requestBody=_VALUE_BODY,
                ),
            },
            "/v1/apps/{app}/secret": {
                "put": _op(
                    "Store the app developer secret (the app's owner only)",
                    signed=True,
                    ok="201",
                    parameters=[_path("app"), _UPDATE, *_POLICY],
                    requestBody=_VALUE_BODY,
                ),
                "head": _existence(
                    "Whether the app developer secret exists (never its value)", [_path("app")]
                ),
            },
            "/v1/datasets/{dataset}/key": {
                "put": _op(
                    "Store the dataset key (the dataset's owner only)",
                    signed=True,
                    ok="201",
                    parameters=[_path("dataset"), _UPDATE, *_POLICY, *_RESTRICTIONS],
                    requestBody=_VALUE_BODY,
                ),
                "head": _existence(
                    "Whether the dataset key exists (never its value)", [_path("dataset")]
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
            **_attestation_paths(),
        },
        "components": {
            "securitySchemes": {
                "confideSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Confide-Signature",
                    "description": "EIP-191 signature over the canonical request (the "
                    "path as sent, percent-escapes kept; a signed path holding one is "
                    "refused), with X-Confide-Address, X-Confide-Timestamp and "
                    "X-Confide-Nonce (docs/sms.md, Signed requests). A nonce is used once: "
                    "a refused request's too, so its replay answers 401",
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
                        "current_hash": {
                            "type": "string",
                            "description": "409 on a session update: the current version's "
                            "hash, to base a new update on",
                        },
                    },
                }
            },
        },
    }


_VOLUME = [
    *_OWNER_NAME,
    {"name": "volume", "in": "path", "required": True, "schema": {"type": "string"}},
]


def _json_body(*required: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "required": list(required)}}},
    }


def _attestation_paths() -> dict[str, Any]:
    """Sim platforms, attestation with sealed configuration, and session volume tags."""
    return {
        "/v1/platforms": {
            "post": _op(
                "Register a sim platform key (Ed25519, 64 hex) with its proof (128 hex: the "
                "key's signature over this sms's audience and the signing wallet); only "
                "registered keys sign accepted sim evidence, and only on an sms run with "
                "--allow-sim",
                signed=True,
                ok="201",
                requestBody=_json_body("platform_key", "proof"),
            )
        },
        "/v1/attest/challenge": {
            "post": _op(
                "A fresh attestation nonce {nonce, expires_in}: single use, 60 s",
                signed=False,
                ok="200",
            )
        },
        "/v1/attest": {
            "post": _op(
                "Evidence, both enclave public keys, service, worker and a session "
                "{owner, name, hash} or a task {id, lease_token}; on success "
                "{sealed (HPKE, base64), signature (sms token key), token, config_hash, "
                "status}; 403 names every reason. A task's request is signed by its worker.",
                signed=False,
                ok="200",
                requestBody=_json_body(
                    "evidence", "nonce", "x25519_public", "ed25519_public", "service"
                ),
            )
        },
        "/v1/task-orders/check": {
            "post": _op(
                "Whether a signed task order could be released {task_id, ok, problems}: "
                "each missing secret, unknown or forged record, bad signature, expiry, "
                "cancel or attempts used up, named",
                signed=False,
                ok="200",
                requestBody=_json_body("order", "signature"),
            )
        },
        "/v1/records": {
            "post": _op(
                "An owner pushes its signed app, dataset or workerpool record "
                "{record, signature} -> {address, kind, sequence}; 409 when its sequence is "
                "not above the kept one, 422 naming a forged or malformed record, 403 when "
                "the signer is not its owner",
                signed=True,
                ok="200",
                requestBody=_json_body("record", "signature"),
            )
        },
        "/v1/task-cancels": {
            "post": _op(
                "The requester cancels a task {order, signature} -> {task, cancelled_at}: "
                "no release for it afterwards; 403 for another signer",
                signed=True,
                ok="200",
                requestBody=_json_body("order", "signature"),
            )
        },
        "/v1/sessions/{owner}/{name}/volumes/{volume}": {
            "put": _op(
                "The session owner sets an input volume's key and tag, and the storage "
                "blob of that version {key, previous_tag?, tag, blob?} (a new key for each "
                "version); 409 when previous_tag is not current",
                signed=True,
                ok="201",
                parameters=_VOLUME,
                requestBody=_json_body("key", "tag"),
            )
        },
        "/v1/sessions/{owner}/{name}/volumes/{volume}/tags": {
            "get": _op(
                "The volume's tag history, oldest first", signed=True, ok="200", parameters=_VOLUME
            ),
            "post": _op(
                "An attested enclave reports an output volume's new tag {previous_tag, tag, "
                "blob_digest, enclave_key, signature}: compare-and-swap, 409 otherwise",
                signed=False,
                ok="201",
                parameters=_VOLUME,
                requestBody=_json_body("tag", "blob_digest", "enclave_key", "signature"),
            ),
        },
        "/v1/sessions/{owner}/{name}/volumes/{volume}/key": {
            "post": _op(
                "A reader of the session (access_policy.read) gets the current version's key "
                "{public_key} -> {volume, tag, blob, sealed_key, signature, grant}: sealed "
                "(HPKE) to public_key, signed by the sms, audited; 404 before a first version",
                signed=True,
                ok="200",
                parameters=_VOLUME,
                requestBody=_json_body("public_key"),
            )
        },
    }
