"""What every HTTP route module of the sms shares: problems, bounded bodies, addresses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from confide.crypto.wallet import normalise_address
from confide.errors import AuthError


class HttpProblemError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def problem(status: int, title: str, detail: str) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _too_large(limit: int) -> HttpProblemError:
    return HttpProblemError(413, "Payload Too Large", f"the body is at most {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never read in full)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def path_address(text: str) -> str:
    """A wallet address from a path or body, in any letter case; 400 if it is not one."""
    try:
        return normalise_address(text)
    except AuthError as exc:
        raise HttpProblemError(400, "Bad Request", str(exc)) from None
