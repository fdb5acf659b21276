"""A client for the sms: signs requests with the wallet, pins the sms's keys on first use."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from confide.crypto.info_proof import (
    CHALLENGE_BYTES,
    check_info_proof,
    jwks_key,
    request_audience,
)
from confide.crypto.requests import canonical_query, sign_request
from confide.crypto.wallet import Wallet, normalise_address
from confide.errors import AuthError, ConfideError, SecretError
from confide.names import NAME
from confide.sms.release_policy import ReleasePolicy

if TYPE_CHECKING:
    from confide.crypto.signing import SigningKey

RETRIES = 3  # after a 503 (the sms's database is locked or unreachable), then give up
RETRY_CAP_SECONDS = 5.0  # the longest wait between attempts, whatever Retry-After says


class SmsClient:
    def __init__(
        self,
        base_url: str,
        *,
        wallet: Wallet | Callable[[], Wallet] | None = None,
        trust_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        retries: int = RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        _require_tls_beyond_loopback(self.base_url)
        self._wallet = wallet
        self._trust_dir = trust_dir
        self._clock = clock
        self._retries = retries
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=30)
        self._info: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            challenge = os.urandom(CHALLENGE_BYTES)
            response = self._request("GET", f"/v1/info?challenge={challenge.hex()}")
            info: dict[str, Any] = response.json()
            check_info_proof(info, challenge)  # it holds the key it presents
            # Requests are signed for that key: never for an audience the server chose,
            # which could name another sms's (its signed requests replayed there).
            deployment = info.get("deployment_id")
            if not isinstance(deployment, str) or not deployment:
                raise AuthError(f"the sms at {self.base_url} names no deployment id")
            audience = request_audience(deployment, jwks_key(info["jwks"]))
            if info.get("audience") != audience:
                raise AuthError(
                    f"the sms at {self.base_url} names audience {info.get('audience')!r}, not "
                    f"its deployment and its own signing key ({audience!r}): refusing to "
                    f"sign requests for it"
                )
            self._pin(info)  # and that key is the one we pinned (or pin it now)
            self._info = info
        return self._info

    def push_requester_secret(
        self, name: str, value: bytes, *, update: bool = False, policy: ReleasePolicy | None = None
    ) -> int:
        wallet = self._need_wallet()
        path = f"/v1/requesters/{wallet.address}/secrets/{_checked_name(name)}"
        return self._push_secret(path, value, update, policy)

    def requester_secret_exists(self, address: str, name: str) -> bool:
        path = f"/v1/requesters/{normalise_address(address)}/secrets/{_checked_name(name)}"
        return self._exists(path)

    def push_app_secret(
        self, app: str, value: bytes, *, update: bool = False, policy: ReleasePolicy | None = None
    ) -> int:
        """The app developer secret; the wallet must be the app's owner."""
        path = f"/v1/apps/{normalise_address(app)}/secret"
        return self._push_secret(path, value, update, policy)

    def app_secret_exists(self, app: str) -> bool:
        return self._exists(f"/v1/apps/{normalise_address(app)}/secret")

    def push_dataset_key(
        self,
        dataset: str,
        value: bytes,
        *,
        update: bool = False,
        policy: ReleasePolicy | None = None,
    ) -> int:
        """The dataset's key; the wallet must be the dataset's owner."""
        path = f"/v1/datasets/{normalise_address(dataset)}/key"
        return self._push_secret(path, value, update, policy)

    def dataset_key_exists(self, dataset: str) -> bool:
        return self._exists(f"/v1/datasets/{normalise_address(dataset)}/key")

    def push_result_key(self, public_key: bytes) -> dict[str, Any]:
        """A new version of the wallet's result-encryption public key (raw 32 bytes):
        ``{address, sha256, version}``."""
        path = f"/v1/requesters/{self._need_wallet().address}/result-key"
        response = self._signed("PUT", path, "", public_key, "application/octet-stream")
        result: dict[str, Any] = response.json()
        return result

    def result_key(self, address: str) -> dict[str, Any] | None:
        """``{address, public_key, sha256, version}``, or None when there is none."""
        path = f"/v1/requesters/{normalise_address(address)}/result-key"
        response = self._retrying(lambda: self._send("GET", path))
        if response.status_code == 404:
            return None
        result: dict[str, Any] = _raise_for_status(response).json()
        return result

    def _push_secret(
        self, path: str, value: bytes, update: bool, policy: ReleasePolicy | None
    ) -> int:
        """PUT a secret value; ``update`` and the release policy go in the signed query."""
        items = [("update", "true")] if update else []
        items += (policy or ReleasePolicy()).query_items()
        response = self._signed(
            "PUT", path, canonical_query(items), value, "application/octet-stream"
        )
        return int(response.json()["version"])

    def _exists(self, path: str) -> bool:
        """A public existence check (HEAD): never a value."""
        response = self._retrying(lambda: self._send("HEAD", path))
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise _error(response)

    def create_session(self, text: str, variables: dict[str, str], source: str) -> dict[str, Any]:
        body = json.dumps({"yaml": text, "vars": variables, "source": source}).encode()
        response = self._signed("POST", "/v1/sessions", "", body, "application/json")
        result: dict[str, Any] = response.json()
        return result

    def update_session(
        self, owner: str, name: str, text: str, variables: dict[str, str], source: str
    ) -> dict[str, Any]:
        body = json.dumps({"yaml": text, "vars": variables, "source": source}).encode()
        path = f"/v1/sessions/{normalise_address(owner)}/{_checked_name(name)}"
        result: dict[str, Any] = self._signed("PUT", path, "", body, "application/json").json()
        return result

    def session(self, owner: str, name: str) -> dict[str, Any]:
        path = f"/v1/sessions/{normalise_address(owner)}/{_checked_name(name)}"
        result: dict[str, Any] = self._signed("GET", path, "", b"", "").json()
        return result

    def session_history(self, owner: str, name: str) -> dict[str, Any]:
        path = f"/v1/sessions/{normalise_address(owner)}/{_checked_name(name)}/history"
        result: dict[str, Any] = self._signed("GET", path, "", b"", "").json()
        return result

    def register_platform(self, platform: SigningKey) -> dict[str, Any]:
        """Register a sim platform key under this client's wallet, with the key's proof
        that the wallet holds it (bound to the wallet and this sms's audience)."""
        from confide.attestation.sim import registration_proof  # noqa: PLC0415 (CLI start-up)

        wallet, audience = self._need_wallet(), str(self.info()["audience"])
        proof = registration_proof(platform, wallet.address, audience)
        document = {"platform_key": platform.public_bytes().hex(), "proof": proof.hex()}
        return self.call_json("POST", "/v1/platforms", document, signed=True)

    def call_json(
        self, method: str, path: str, document: dict[str, Any] | None, *, signed: bool
    ) -> dict[str, Any]:
        """A JSON call to any route; signed with the wallet when ``signed``."""
        body = b"" if document is None else json.dumps(document).encode()
        content_type = "" if document is None else "application/json"
        if signed:
            response = self._signed(method, path, "", body, content_type)
        else:
            headers = {"content-type": content_type} if content_type else {}
            response = self._request(method, path, content=body, headers=headers)
        result: dict[str, Any] = response.json()
        return result

    def _need_wallet(self) -> Wallet:
        wallet = self._wallet
        if callable(wallet):  # still being unlocked (its scrypt ran meanwhile): wait once
            wallet = self._wallet = wallet()
        if wallet is None:
            raise AuthError("this request must be signed: a wallet is needed")
        return wallet

    def _signed(
        self, method: str, path: str, query: str, body: bytes, content_type: str
    ) -> httpx.Response:
        wallet, audience = self._need_wallet(), str(self.info()["audience"])
        url = f"{path}?{query}" if query else path
        sent = _raw_path(path)

        def attempt() -> httpx.Response:  # signed anew each time: a fresh nonce and timestamp
            headers = sign_request(
                wallet,
                audience=audience,
                method=method,
                path=sent,
                query=query,
                content_type=content_type,
                body=body,
                now=int(self._clock()),
            )
            if content_type:
                headers["content-type"] = content_type
            return self._send(method, url, content=body, headers=headers)

        return _raise_for_status(self._retrying(attempt))

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return _raise_for_status(self._retrying(lambda: self._send(method, url, **kwargs)))

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfideError(f"cannot reach the sms at {self.base_url}: {exc}") from None

    def _retrying(self, attempt: Callable[[], httpx.Response]) -> httpx.Response:
        """``attempt()``, again after each 503 (the sms's database is locked or unreachable:
        nothing was written), up to ``retries`` times, waiting as Retry-After says (capped)
        or backing off exponentially; then the sms is unavailable."""
        for retry in range(self._retries + 1):
            response = attempt()
            if response.status_code != 503:
                return response
            if retry < self._retries:
                self._sleep(_retry_delay(response, retry))
        raise ConfideError(
            f"the sms is unavailable: {_detail(response)} "
            f"(503 on each of {self._retries + 1} attempts)"
        )

    def _pin(self, info: dict[str, Any]) -> None:
        """Trust on first use: remember the sms's JWKS; refuse a changed one afterwards."""
        if self._trust_dir is None:
            return
        self._trust_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._trust_dir / f"sms-{_pin_name(self.base_url)}.json"
        legacy = (
            self._trust_dir / f"sms-{hashlib.sha256(self.base_url.encode()).hexdigest()[:16]}.json"
        )
        if not path.exists() and legacy.exists():  # pinned under the URL as it was typed
            legacy.rename(path)
        keys = json.dumps(info.get("jwks"), sort_keys=True)
        if path.exists():
            pinned = json.loads(path.read_text())
            if pinned.get("jwks") != keys:
                raise AuthError(
                    f"the sms at {self.base_url} presents signing keys that differ from the "
                    f"ones pinned on first contact ({path}); if the operator really rotated "
                    f"them, delete that file to trust the new keys"
                )
            return
        path.write_text(json.dumps({"url": self.base_url, "jwks": keys}) + "\n")


def _pin_name(base_url: str) -> str:
    """The name a pin is kept under: the sms's origin and path in one form, so that
    ``HTTPS://SMS.example:443/`` and ``https://sms.example`` share one pin (two forms of
    one address must not each start trust on first use again)."""
    url = httpx.URL(base_url)
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    origin = f"{url.scheme}://{url.host}:{port}{url.path.rstrip('/')}"
    return hashlib.sha256(origin.encode()).hexdigest()[:16]


def _raw_path(path: str) -> str:
    """The path as httpx sends it (percent-encoded), which is what the server verifies:
    signing another spelling of it would be refused, or worse, name another path."""
    if "?" in path or "#" in path:
        raise ConfideError(f"a signed path carries no query or fragment: {path!r}")
    return httpx.URL(path).raw_path.decode("ascii")


def _checked_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise SecretError(f"secret name {name!r} is not allowed: 1 to 64 of A-Z a-z 0-9 _ -")
    return name


def _require_tls_beyond_loopback(url: str) -> None:
    """Secrets never cross a network in the clear: plain http only to this machine."""
    parsed = httpx.URL(url)
    if parsed.scheme == "https":
        return
    host = parsed.host
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if parsed.scheme != "http" or not loopback:
        raise AuthError(f"refusing {url}: use https:// (plain http only to 127.0.0.1)")


def _retry_delay(response: httpx.Response, retry: int) -> float:
    """Back off 0.25 s doubling per retry, never sooner than Retry-After (seconds; an HTTP
    date is ignored), never longer than RETRY_CAP_SECONDS."""
    backoff = 0.25 * (1 << retry)
    try:
        asked = float(response.headers.get("retry-after", ""))
    except ValueError:
        asked = 0.0
    return min(max(asked, backoff), RETRY_CAP_SECONDS)


def _raise_for_status(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise _error(response)
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.reason_phrase


def _error(response: httpx.Response) -> ConfideError:
    detail = _detail(response)
    kind: type[ConfideError] = ConfideError
    if response.status_code in (401, 403):
        kind = AuthError
    elif response.status_code in (400, 404, 409, 413):
        kind = SecretError
    return kind(f"sms refused ({response.status_code}): {detail}")
