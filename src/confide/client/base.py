"""What every confide client shares: the service's proven ``/v1/info``, key pinning,
signed requests, retries after a 503, and errors that name the service.

One implementation for the sms, the hub and the storage (:class:`ServiceClient`):

- ``info()`` asks with a fresh 32-byte challenge and checks the proof (the server holds
  the key its JWKS names), that the audience it states is ``{service}/{deployment}/{that
  key}``, and, with a ``trust_dir``, that the key is the one pinned on first contact
  (``$CONFIDE_HOME/trust/{service}-….json``);
- signed requests are signed for that audience, anew at each attempt (fresh nonce and
  timestamp), over the raw path as it is sent;
- a 503 (the service's database locked or unreachable: nothing was written) is retried
  up to ``retries`` times, waiting as Retry-After says (capped) or backing off;
- plain http is refused beyond the loopback: secrets and signatures never cross a
  network in the clear.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import httpx

from confide.client.pins import (
    key_fingerprint,
    pin_name,
    require_tls_beyond_loopback,
    write_pin,
)
from confide.crypto.info_proof import (
    CHALLENGE_BYTES,
    check_info_proof,
    jwks_key,
    request_audience,
)
from confide.crypto.requests import RequestSigner, sign_request
from confide.crypto.wallet import Wallet
from confide.errors import AuthError, ConfideError, SecretError

RETRIES = 3  # after a 503 (the service's database is locked or unreachable), then give up
RETRY_CAP_SECONDS = 5.0  # the longest wait between attempts, whatever Retry-After says

# a wallet, a callable still unlocking one, or another request signer (the enclave
# runtime's relay signer); a signer is never callable
WalletSource = Wallet | Callable[[], Wallet] | RequestSigner | None
Body = bytes | Callable[[], Iterable[bytes]]  # bytes, or a factory of chunks (one per attempt)


class ServiceClient:
    """A client of one confide service (``service`` names its kind in the audience)."""

    service: ClassVar[str] = "sms"
    unreachable_hint: ClassVar[str] = ""  # said after "cannot reach the … at URL: …"

    def __init__(
        self,
        base_url: str,
        *,
        wallet: WalletSource = None,
        trust_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        retries: int = RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        on_pin: Callable[[str, str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        require_tls_beyond_loopback(self.base_url)
        self._wallet = wallet
        self._trust_dir = trust_dir
        self._clock = clock
        self._retries = retries
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)
        self._info: dict[str, Any] | None = None
        self.pinned_now = False  # this client pinned the service's key (first contact)
        self._on_pin = on_pin  # told (url, key fingerprint) when a key is pinned now

    def close(self) -> None:
        self._http.close()

    # --- identity -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The service's ``/v1/info``, its key proven over our challenge (and pinned)."""
        if self._info is None:
            challenge = os.urandom(CHALLENGE_BYTES)
            response = self._request("GET", f"/v1/info?challenge={challenge.hex()}")
            try:
                info: dict[str, Any] = response.json()
            except ValueError:
                raise ConfideError(f"{self._what()} answers /v1/info with no JSON") from None
            try:
                check_info_proof(info, challenge)  # it holds the key it presents
            except AuthError as exc:
                raise AuthError(f"{self._what()}: {exc}") from None
            # Requests are signed for that key: never for an audience the server chose,
            # which could name another service's (its signed requests replayed there).
            deployment = info.get("deployment_id")
            if not isinstance(deployment, str) or not deployment:
                raise AuthError(f"{self._what()} names no deployment id")
            audience = request_audience(deployment, jwks_key(info["jwks"]), self.service)
            if info.get("audience") != audience:
                raise AuthError(
                    f"{self._what()} names audience {info.get('audience')!r}, not its "
                    f"deployment and its own signing key ({audience!r}): refusing to "
                    f"sign requests for it"
                )
            self._pin(info)  # and that key is the one we pinned (or pin it now)
            self._info = info
        return self._info

    def key(self) -> bytes:
        """The service's Ed25519 signing key (raw 32 bytes), as proven by :meth:`info`."""
        return jwks_key(self.info()["jwks"])

    def fingerprint(self) -> str:
        """SHA-256 hex of :meth:`key`: what ``confide serve sms`` prints at start."""
        return key_fingerprint(self.key())

    # --- requests -------------------------------------------------------------------------

    def call_json(
        self,
        method: str,
        path: str,
        document: Any = None,
        *,
        signed: bool,
        query: str = "",
        accept: Iterable[int] = (),
    ) -> Any:
        """A JSON call to any route; signed with the wallet when ``signed``. A status in
        ``accept`` (say 404) is returned as None instead of refused."""
        body = b"" if document is None else json.dumps(document).encode()
        content_type = "" if document is None else "application/json"
        if signed:
            response = self._signed(method, path, query, body, content_type, accept=accept)
        else:
            headers = {"content-type": content_type} if content_type else {}
            url = f"{path}?{query}" if query else path
            response = self._request(method, url, content=body, headers=headers, accept=accept)
        if response.status_code in accept or response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise ConfideError(f"{self._what()} answered {path} with no JSON") from None

    def _need_wallet(self) -> RequestSigner:
        wallet = self._wallet
        if callable(wallet):  # still being unlocked (its scrypt ran meanwhile): wait once
            wallet = self._wallet = wallet()
        if wallet is None:
            raise AuthError("this request must be signed: a wallet is needed")
        return wallet

    def _signed(
        self,
        method: str,
        path: str,
        query: str,
        body: Body,
        content_type: str,
        *,
        body_sha256: str | None = None,
        headers: dict[str, str] | None = None,
        accept: Iterable[int] = (),
        stream: bool = False,
    ) -> httpx.Response:
        """A request signed for the service's audience; ``body`` is bytes, or (with
        ``body_sha256``, its digest) a factory of chunks streamed at each attempt."""
        wallet, audience = self._need_wallet(), str(self.info()["audience"])
        url = f"{path}?{query}" if query else path
        # The path the server receives: the base URL's own path (an sms mounted at /sms
        # under `confide up`) and then the route's.
        sent = raw_path(httpx.URL(self.base_url).path.rstrip("/") + path)

        def attempt() -> httpx.Response:  # signed anew each time: a fresh nonce and timestamp
            signed = _sign(
                wallet,
                audience=audience,
                method=method,
                path=sent,
                query=query,
                content_type=content_type,
                body=body,
                body_sha256=body_sha256,
                now=int(self._clock()),
            )
            if content_type:
                signed["content-type"] = content_type
            signed.update(headers or {})
            content = body if isinstance(body, bytes) else body()
            return self._send(method, url, content=content, headers=signed, stream=stream)

        return self._checked(self._retrying(attempt), accept)

    def _request(
        self, method: str, url: str, *, accept: Iterable[int] = (), **kwargs: Any
    ) -> httpx.Response:
        return self._checked(self._retrying(lambda: self._send(method, url, **kwargs)), accept)

    def _send(
        self, method: str, url: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            if stream:
                request = self._http.build_request(method, url, **kwargs)
                return self._http.send(request, stream=True)
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfideError(
                f"cannot reach {self._what()}: {exc or type(exc).__name__}{self.unreachable_hint}"
            ) from None

    def _retrying(self, attempt: Callable[[], httpx.Response]) -> httpx.Response:
        """``attempt()``, again after each 503 (the service's database is locked or
        unreachable: nothing was written), up to ``retries`` times, waiting as
        Retry-After says (capped) or backing off exponentially; then it is unavailable."""
        for retry in range(self._retries + 1):
            response = attempt()
            if response.status_code != 503:
                return response
            response.read()
            response.close()
            if retry < self._retries:
                self._sleep(_retry_delay(response, retry))
        raise ConfideError(
            f"the {self.service} is unavailable: {_detail(response)} "
            f"(503 on each of {self._retries + 1} attempts)"
        )

    def _checked(self, response: httpx.Response, accept: Iterable[int]) -> httpx.Response:
        if response.status_code >= 400 and response.status_code not in set(accept):
            response.read()
            response.close()
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ConfideError:
        detail = _detail(response)
        kind: type[ConfideError] = ConfideError
        if response.status_code in (401, 403):
            kind = AuthError
        elif response.status_code in (400, 404, 409, 413):
            kind = SecretError if self.service == "sms" else ConfideError
        return kind(f"{self.service} refused ({response.status_code}): {detail}")

    def _what(self) -> str:
        return f"the {self.service} at {self.base_url}"

    # --- pinning --------------------------------------------------------------------------

    def pin_path(self) -> Path | None:
        if self._trust_dir is None:
            return None
        return self._trust_dir / f"{self.service}-{pin_name(self.base_url)}.json"

    def _pin(self, info: dict[str, Any]) -> None:
        """Trust on first use: remember the service's JWKS; refuse a changed one afterwards."""
        path = self.pin_path()
        if path is None or self._trust_dir is None:
            return
        self._trust_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        legacy = self._trust_dir / (
            f"{self.service}-{hashlib.sha256(self.base_url.encode()).hexdigest()[:16]}.json"
        )
        if not path.exists() and legacy.exists():  # pinned under the URL as it was typed
            legacy.rename(path)
        keys = json.dumps(info.get("jwks"), sort_keys=True)
        if path.exists():
            pinned = json.loads(path.read_text())
            if pinned.get("jwks") != keys:
                raise AuthError(
                    f"{self._what()} presents signing keys that differ from the ones pinned "
                    f"on first contact ({path}); if the operator really rotated them, delete "
                    f"that file (or run `confide sms trust URL --fingerprint HEX`) to trust "
                    f"the new keys"
                )
            return
        write_pin(path, self.base_url, keys)
        self.pinned_now = True
        if self._on_pin is not None:
            self._on_pin(self.base_url, key_fingerprint(jwks_key(info.get("jwks"))))


def raw_path(path: str) -> str:
    """The path as httpx sends it (percent-encoded), which is what the server verifies:
    signing another spelling of it would be refused, or worse, name another path."""
    if "?" in path or "#" in path:
        raise ConfideError(f"a signed path carries no query or fragment: {path!r}")
    return httpx.URL(path).raw_path.decode("ascii")


def _sign(
    wallet: RequestSigner,
    *,
    audience: str,
    method: str,
    path: str,
    query: str,
    content_type: str,
    body: Body,
    body_sha256: str | None,
    now: int,
) -> dict[str, str]:
    if body_sha256 is None:
        if not isinstance(body, bytes):
            raise ConfideError("a streamed body is signed by its digest")
        return sign_request(
            wallet,
            audience=audience,
            method=method,
            path=path,
            query=query,
            content_type=content_type,
            body=body,
            now=now,
        )
    # Signed over the digest the server checks while it streams the body.
    return sign_request(
        wallet,
        audience=audience,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        body=b"",
        body_sha256=body_sha256,
        now=now,
    )


def _retry_delay(response: httpx.Response, retry: int) -> float:
    """Back off 0.25 s doubling per retry, never sooner than Retry-After (seconds; an HTTP
    date is ignored), never longer than RETRY_CAP_SECONDS."""
    backoff = 0.25 * (1 << retry)
    try:
        asked = float(response.headers.get("retry-after", ""))
    except ValueError:
        asked = 0.0
    return min(max(asked, backoff), RETRY_CAP_SECONDS)


def _detail(response: httpx.Response) -> str:
    """The problem's detail, with its list of problems (the hub's ``problems`` member)."""
    try:
        document = response.json()
    except ValueError:
        return response.reason_phrase
    if not isinstance(document, dict):
        return response.reason_phrase
    detail = str(document.get("detail") or document.get("title") or response.reason_phrase)
    problems = document.get("problems")
    if isinstance(problems, list) and problems:
        listed = "; ".join(str(p) for p in problems)
        if listed not in detail:
            detail = f"{detail}: {listed}"
    return detail
