"""A client for the hub: records, task queueing and task views (docs/hub.md).

The hub is untrusted: it schedules, it never decides who gets a secret. What this client
fetches from it is checked where it matters (an app record is verified against the
caller's own wallet before a secret is pushed for its measurement: :func:`own_record`),
and every record the CLI writes goes to the sms too (:mod:`confide.client.sms`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from confide.client.base import ServiceClient
from confide.client.known import check_not_older
from confide.crypto.requests import canonical_query
from confide.crypto.wallet import normalise_address
from confide.errors import ConfideError
from confide.records import KINDS, OwnerRecord, RecordError, SignedRecord
from confide.sms.tasks import TaskOrder

DEFAULT_HUB = "http://127.0.0.1:8088"  # where `confide up` listens


class LeaseLostError(ConfideError):
    """The hub refused a heartbeat or report under a lease (409 stale fencing token or
    illegal transition, 403 another worker's): this worker no longer holds the task."""


class HubClient(ServiceClient):
    service = "hub"
    unreachable_hint = (
        " (is a hub running there? start one on this machine with `confide up`, or point "
        "--hub / CONFIDE_HUB at yours)"
    )

    def deployment(self) -> str:
        return str(self.info()["deployment_id"])

    # --- records ---------------------------------------------------------------------------

    def put_record(self, signed: SignedRecord) -> dict[str, Any]:
        """Register a new version of an owner-signed record: ``{"address", "kind",
        "sequence"}``; refused (409) when the hub keeps a higher sequence."""
        result: dict[str, Any] = self.call_json("PUT", "/v1/records", signed.to_json(), signed=True)
        return result

    def record(self, address: str) -> SignedRecord | None:
        """The signed record the hub keeps for ``address`` (unverified: verify it), or None."""
        path = f"/v1/records/{normalise_address(address)}"
        document = self.call_json("GET", path, signed=False, accept=(404,))
        if document is None:
            return None
        try:
            return SignedRecord.from_json(document)
        except RecordError as exc:
            raise ConfideError(f"the hub's record {address} is malformed: {exc}") from None

    def view(self, kind: str, address: str) -> dict[str, Any] | None:
        """The hub's view of an app, dataset or workerpool (None when it knows none)."""
        path = f"/v1/{_plural(kind)}/{normalise_address(address)}"
        result: dict[str, Any] | None = self.call_json("GET", path, signed=False, accept=(404,))
        return result

    def views(self, kind: str, owner: str | None = None) -> list[dict[str, Any]]:
        query = canonical_query({"owner": normalise_address(owner)}) if owner else ""
        result = self.call_json("GET", f"/v1/{_plural(kind)}", signed=False, query=query)
        if not isinstance(result, list):
            raise ConfideError(f"the hub's list of {_plural(kind)} is not a JSON list")
        return result

    # --- tasks -----------------------------------------------------------------------------

    def submit_task(self, order: TaskOrder, signature: str) -> dict[str, Any]:
        """Queue a signed order: ``{"task", "status"}`` (the same order twice: the task
        it already made). The hub names every problem it found, the sms's among them."""
        document = {"order": order.to_json(), "signature": signature}
        result: dict[str, Any] = self.call_json("POST", "/v1/tasks", document, signed=True)
        return result

    def task(self, task_id: str) -> dict[str, Any] | None:
        path = f"/v1/tasks/{_task(task_id)}"
        result: dict[str, Any] | None = self.call_json("GET", path, signed=False, accept=(404,))
        return result

    def tasks(
        self,
        *,
        requester: str | None = None,
        workerpool: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        params = {
            "requester": normalise_address(requester) if requester else None,
            "workerpool": normalise_address(workerpool) if workerpool else None,
            "status": status,
            "limit": None if limit is None else str(limit),
        }
        query = canonical_query({k: v for k, v in params.items() if v is not None})
        result = self.call_json("GET", "/v1/tasks", signed=False, query=query)
        if isinstance(result, dict) and isinstance(result.get("tasks"), list):
            result = result["tasks"]
        if not isinstance(result, list):
            raise ConfideError("the hub's list of tasks is not a JSON list")
        return result

    def task_grants(self, task_id: str) -> dict[str, str | None]:
        """Storage grants to this wallet (the task's requester) for the task's result and
        logs blobs: ``{"result": grant|None, "logs": grant|None}`` (the hub refuses
        another wallet, and a task with no result yet)."""
        path = f"/v1/tasks/{_task(task_id)}/grants"
        result: dict[str, str | None] = self.call_json("POST", path, {}, signed=True)
        return result

    # --- workers ---------------------------------------------------------------------------

    def claim(self, pool: str, wait: int = 0) -> dict[str, Any] | None:
        """Claim a task of ``pool`` (this wallet must be a member), waiting up to ``wait``
        seconds (at most 20) for one: ``{"task", "lease_token", "lease_expires_at",
        "grants"}``, or None when none came."""
        path = f"/v1/workerpools/{normalise_address(pool)}/claim"
        query = canonical_query({"wait": str(wait)}) if wait else ""
        result: dict[str, Any] | None = self.call_json("POST", path, signed=True, query=query)
        return result

    def heartbeat(self, task_id: str, lease_token: str) -> int:
        """Renew the lease: its new expiry (unix seconds); refused (409) when stale."""
        path = f"/v1/tasks/{_task(task_id)}/heartbeat"
        document = self._leased(path, {"lease_token": lease_token})
        return int(document["lease_expires_at"])

    def release(self, task_id: str, lease_token: str) -> dict[str, Any]:
        """Give the lease back (this worker cannot finish the task): the task's view."""
        return self._leased(f"/v1/tasks/{_task(task_id)}/release", {"lease_token": lease_token})

    def report(
        self,
        task_id: str,
        lease_token: str,
        status: str,
        *,
        via: tuple[str, ...] | list[str] = (),
        cause: str | None = None,
        result_digest: str | None = None,
        result_blob: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Report ``status`` (through ``via``) under the lease: the task's view."""
        document: dict[str, Any] = {"lease_token": lease_token, "status": status}
        optional = {
            "via": list(via) or None,
            "cause": cause,
            "result_digest": result_digest,
            "result_blob": result_blob,
            "result": result,
        }
        document.update({k: v for k, v in optional.items() if v is not None})
        return self._leased(f"/v1/tasks/{_task(task_id)}/status", document)

    def _leased(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        """A signed call under a lease; LeaseLostError when the hub says it is not ours."""
        try:
            answer: dict[str, Any] = self.call_json("POST", path, document, signed=True)
        except ConfideError as exc:
            if "refused (409)" in str(exc) or "refused (403)" in str(exc):
                raise LeaseLostError(str(exc)) from None
            raise
        return answer

    def cancel_task(self, task_id: str) -> dict[str, Any]:
        """Cancel a task of ours before it is final (FAILED, cause CANCELLED_BY_REQUESTER)."""
        path = f"/v1/tasks/{_task(task_id)}/cancel"
        result: dict[str, Any] = self.call_json("POST", path, {}, signed=True) or {}
        return result


def own_record(
    hub: HubClient, address: str, kind: str, owner: str, known: Path | None = None
) -> OwnerRecord:
    """The record the hub keeps for ``address``, once it verifies as a ``kind`` record
    signed by ``owner`` (the caller's own wallet) for the hub's deployment, and is not
    older than the version of it kept in ``known`` (confide.client.known): what the hub
    says is then what the owner signed last, not something it substituted or replayed."""
    signed = hub.record(address)
    if signed is None:
        raise ConfideError(f"the hub at {hub.base_url} knows no {kind} {address}")
    record = signed.verify(hub.deployment())
    if known is not None and record.owner == normalise_address(owner):
        check_not_older(known, signed)
    if record.kind != kind or record.address != normalise_address(address):
        raise RecordError(
            f"the hub answered {address} with the {record.kind} record {record.address}: "
            f"not the {kind} asked for"
        )
    if record.owner != normalise_address(owner):
        raise RecordError(
            f"{kind} {address} is signed by {record.owner}, not by your wallet {owner}: "
            f"only its owner may push its secret"
        )
    return record


def verified_record(hub: HubClient, address: str, kind: str) -> OwnerRecord:
    """The record for ``address``, verified as signed by its owner for this deployment."""
    signed = hub.record(address)
    if signed is None:
        raise ConfideError(f"the hub at {hub.base_url} knows no {kind} {address}")
    record = signed.verify(hub.deployment())
    if record.kind != kind or record.address != normalise_address(address):
        raise RecordError(f"{address} is not a {kind} (the hub holds a {record.kind} record)")
    return record


def _plural(kind: str) -> str:
    if kind not in KINDS:
        raise ConfideError(f"unknown record kind {kind!r}")
    return f"{kind}s"


def _task(task_id: str) -> str:
    text = task_id.lower()
    if (
        len(text) != 66
        or not text.startswith("0x")
        or not all(c in "0123456789abcdef" for c in text[2:])
    ):
        raise ConfideError(f"{task_id!r} is not a task id (0x and 64 hex)")
    return quote(text)
