"""A client for the sms: signs requests with the wallet, pins the sms's keys on first use."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from confide.crypto.requests import canonical_query, sign_request
from confide.crypto.wallet import Wallet, normalise_address
from confide.errors import AuthError, ConfideError, SecretError
from confide.sms.secrets import SECRET_NAME


class SmsClient:
    def __init__(
        self,
        base_url: str,
        *,
        wallet: Wallet | None = None,
        trust_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        _require_tls_beyond_loopback(self.base_url)
        self._wallet = wallet
        self._trust_dir = trust_dir
        self._clock = clock
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=30)
        self._info: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            response = self._request("GET", "/v1/info")
            info: dict[str, Any] = response.json()
            self._pin(info)
            self._info = info
        return self._info

    def push_requester_secret(self, name: str, value: bytes, *, update: bool = False) -> int:
        wallet = self._need_wallet()
        path = f"/v1/requesters/{wallet.address}/secrets/{_checked_name(name)}"
        query = canonical_query([("update", "true")] if update else [])
        response = self._signed("PUT", path, query, value, "application/octet-stream")
        return int(response.json()["version"])

    def requester_secret_exists(self, address: str, name: str) -> bool:
        path = f"/v1/requesters/{normalise_address(address)}/secrets/{_checked_name(name)}"
        try:
            response = self._http.request("HEAD", path)
        except httpx.HTTPError as exc:
            raise ConfideError(f"cannot reach the sms at {self.base_url}: {exc}") from None
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise _error(response)

    def create_session(self, text: str, variables: dict[str, str], source: str) -> dict[str, Any]:
        body = json.dumps({"yaml": text, "vars": variables, "source": source}).encode()
        response = self._signed("POST", "/v1/sessions", "", body, "application/json")
        result: dict[str, Any] = response.json()
        return result

    def update_session(self, owner: str, name: str, text: str, variables: dict[str, str],
                       source: str) -> dict[str, Any]:  # fmt: skip
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

    def _need_wallet(self) -> Wallet:
        if self._wallet is None:
            raise AuthError("this request must be signed: a wallet is needed")
        return self._wallet

    def _signed(
        self, method: str, path: str, query: str, body: bytes, content_type: str
    ) -> httpx.Response:
        headers = sign_request(
            self._need_wallet(),
            audience=str(self.info()["audience"]),
            method=method,
            path=path,
            query=query,
            content_type=content_type,
            body=body,
            now=int(self._clock()),
        )
        if content_type:
            headers["content-type"] = content_type
        url = f"{path}?{query}" if query else path
        return self._request(method, url, content=body, headers=headers)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfideError(f"cannot reach the sms at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _pin(self, info: dict[str, Any]) -> None:
        """Trust on first use: remember the sms's JWKS; refuse a changed one afterwards."""
        if self._trust_dir is None:
            return
        self._trust_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = hashlib.sha256(self.base_url.encode()).hexdigest()[:16]
        path = self._trust_dir / f"sms-{name}.json"
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


def _checked_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):
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


def _error(response: httpx.Response) -> ConfideError:
    try:
        detail = str(response.json().get("detail"))
    except (ValueError, AttributeError):
        detail = response.reason_phrase
    kind: type[ConfideError] = ConfideError
    if response.status_code in (401, 403):
        kind = AuthError
    elif response.status_code in (400, 404, 409, 413):
        kind = SecretError
    return kind(f"sms refused ({response.status_code}): {detail}")
