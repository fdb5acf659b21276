"""``GET /v1/info``: a service's public description, with a proof of its signing key.

Every service (sms, hub, storage) answers the same way: the document, and with
``?challenge=<64 hex>`` a ``proof``, its signing key's signature over the challenge and
the document (:mod:`confide.crypto.info_proof`), so that a client pins a key the server
was seen to hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.crypto.info_proof import CHALLENGE_BYTES, INFO_LABEL, info_message
from confide.web.problems import HttpProblemError

Signer = Callable[[bytes, bytes], bytes]  # (label, message) -> Ed25519 signature


def info_route(document: Callable[[], dict[str, Any]], sign: Signer) -> Route:
    """The ``/v1/info`` route over ``document()``, proven with ``sign``."""

    async def info(request: Request) -> Response:
        answer = document()
        challenge = request.query_params.get("challenge")
        if challenge is not None:
            try:
                raw = bytes.fromhex(challenge)
            except ValueError:
                raw = b""
            if len(raw) != CHALLENGE_BYTES:
                raise HttpProblemError(400, "Bad Request", "challenge is 32 bytes as 64 hex")
            answer["proof"] = sign(INFO_LABEL, info_message(raw, answer)).hex()
        return JSONResponse(answer)

    return Route("/v1/info", info, methods=["GET"])
