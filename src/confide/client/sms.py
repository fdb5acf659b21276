"""A client for the sms: signs requests with the wallet, pins the sms's keys on first use
(the machinery every service client shares: :mod:`confide.client.base`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from confide.client.base import RETRIES, RETRY_CAP_SECONDS, ServiceClient
from confide.crypto.requests import canonical_query
from confide.crypto.wallet import normalise_address
from confide.errors import SecretError
from confide.names import NAME
from confide.sms.release_policy import ReleasePolicy

if TYPE_CHECKING:
    from confide.crypto.signing import SigningKey
    from confide.records import SignedRecord
    from confide.sms.tasks import TaskOrder

__all__ = ["RETRIES", "RETRY_CAP_SECONDS", "SmsClient"]


class SmsClient(ServiceClient):
    """The sms's routes; :class:`ServiceClient` signs, pins, retries."""

    service = "sms"

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
        result: dict[str, Any] | None = self.call_json("GET", path, signed=False, accept=(404,))
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
        response = self._request("HEAD", path, accept=(404,))
        return response.status_code == 200

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

    def push_volume(
        self,
        owner: str,
        name: str,
        volume: str,
        *,
        key: bytes,
        previous_tag: str | None,
        tag: str,
        blob: str | None,
    ) -> dict[str, Any]:
        """Record a new version of an input volume: its key, tag and storage blob
        (compare-and-swap on ``previous_tag``)."""
        document: dict[str, Any] = {"key": key.hex(), "previous_tag": previous_tag, "tag": tag}
        if blob is not None:
            document["blob"] = blob
        result: dict[str, Any] = self.call_json(
            "PUT", _volume_path(owner, name, volume), document, signed=True
        )
        return result

    def volume_tags(self, owner: str, name: str, volume: str) -> list[dict[str, Any]]:
        """The volume's versions, oldest first (readers of the session only)."""
        path = _volume_path(owner, name, volume) + "/tags"
        answer = self.call_json("GET", path, signed=True)
        tags: list[dict[str, Any]] = answer["tags"]
        return tags

    def report_tag(
        self,
        owner: str,
        name: str,
        volume: str,
        *,
        previous_tag: str | None,
        tag: str,
        blob: str,
        enclave_key: str,
        signature: str,
    ) -> dict[str, Any]:
        """Hand the sms an output volume's new tag, as the attested enclave signed it
        (the request itself is not signed: the enclave's signature is what counts)."""
        document = {
            "previous_tag": previous_tag,
            "tag": tag,
            "blob_digest": blob,
            "enclave_key": enclave_key,
            "signature": signature,
        }
        path = _volume_path(owner, name, volume) + "/tags"
        result: dict[str, Any] = self.call_json("POST", path, document, signed=False)
        return result

    def volume_key(self, owner: str, name: str, volume: str, public: bytes) -> dict[str, Any]:
        """The current version's key, sealed to ``public``: check it with
        :func:`confide.crypto.volume_release.open_release`."""
        path = _volume_path(owner, name, volume) + "/key"
        answer: dict[str, Any] = self.call_json(
            "POST", path, {"public_key": public.hex()}, signed=True
        )
        return answer

    def register_platform(self, platform: SigningKey) -> dict[str, Any]:
        """Register a sim platform key under this client's wallet, with the key's proof
        that the wallet holds it (bound to the wallet and this sms's audience)."""
        from confide.attestation.sim import registration_proof  # noqa: PLC0415 (CLI start-up)

        wallet, audience = self._need_wallet(), str(self.info()["audience"])
        proof = registration_proof(platform, wallet.address, audience)
        document = {"platform_key": platform.public_bytes().hex(), "proof": proof.hex()}
        result: dict[str, Any] = self.call_json("POST", "/v1/platforms", document, signed=True)
        return result

    def push_record(self, signed: SignedRecord) -> dict[str, Any]:
        """Send an owner-signed record to the sms (``POST /v1/records``), which keeps the
        highest sequence it has seen per address: a hub can then neither replay an older
        one nor withhold this one. ``{"address", "kind", "sequence"}``; when the sms keeps
        this sequence or a higher one already (409), ``{…, "kept_newer": True}``."""
        result: dict[str, Any] | None = self.call_json(
            "POST", "/v1/records", signed.to_json(), signed=True, accept=(409,)
        )
        if result is None:
            record = signed.record
            return {
                "address": record.address,
                "kind": record.kind,
                "sequence": record.sequence,
                "kept_newer": True,
            }
        return result

    def cancel_task(self, order: TaskOrder, signature: str) -> dict[str, Any]:
        """Tell the sms the requester cancelled this task: it refuses any later release
        for it, whatever the hub does (``POST /v1/task-cancels``)."""
        document = {"order": order.to_json(), "signature": signature}
        result: dict[str, Any] = self.call_json("POST", "/v1/task-cancels", document, signed=True)
        return result

    def check_order(self, order: TaskOrder, signature: str) -> dict[str, Any]:
        """What would stop this order's release: ``{"task_id", "ok", "problems"}``."""
        document = {"order": order.to_json(), "signature": signature}
        result: dict[str, Any] = self.call_json(
            "POST", "/v1/task-orders/check", document, signed=False
        )
        return result


def _checked_name(name: str, what: str = "secret name") -> str:
    if not NAME.fullmatch(name):
        raise SecretError(f"{what} {name!r} is not allowed: 1 to 64 of A-Z a-z 0-9 _ -")
    return name


def _volume_path(owner: str, name: str, volume: str) -> str:
    owner, name = normalise_address(owner), _checked_name(name, "session name")
    return f"/v1/sessions/{owner}/{name}/volumes/{_checked_name(volume, 'volume name')}"
