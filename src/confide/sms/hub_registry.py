"""The sms's registry over the hub: owner-signed records, verified here.

The hub (untrusted) serves records and tasks (:class:`RecordSource`: over HTTP,
:class:`HttpRecordSource`; in process under ``confide up``). :class:`HubRegistry` verifies
every record it fetches (its owner's signature, and the hub's deployment, pinned at
first contact in ``service_identity``), keeps a higher sequence than the one it has
(:class:`~confide.sms.kept_records.RecordKeeper`, which owners also push to), and answers
from the highest sequence it has verified. So a hub can delay or drop work, but it can
neither forge a record, nor replay an older one, nor withhold a newer one its owner pushed
here. A task's order is the requester's, its signature checked by the order's review.

Records are fetched at most every :attr:`HubRegistry.refresh` seconds per address (a
verified record's signature is recovered once); a task at every lookup, since its lease
changes at every claim. Fetches happen outside any grant transaction, with a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, runtime_checkable

import httpx
from sqlalchemy import Engine

from confide.crypto.wallet import normalise_address
from confide.db.identity import recorded
from confide.errors import AuthError, ConfideError
from confide.jsonsafe import loads_bounded
from confide.records import MAX_RECORD_BYTES, OwnerRecord, RecordError, SignedRecord
from confide.sms.kept_records import RecordKeeper
from confide.sms.registry import (
    AppRecord,
    DatasetRecord,
    HubUnavailableError,
    RegistryError,
    WorkerpoolRecord,
)
from confide.sms.tasks import TaskOrder, TaskRecord

SERVICE, HUB_DEPLOYMENT = "sms", "hub_deployment"  # the pin's row in service_identity
REFRESH_SECONDS = 3.0  # a record is fetched from the hub at most this often per address
PIN_RETRY_SECONDS = 3.0  # an unpinned sms asks the hub's deployment at most this often
VIEWS_KEPT = 10_000
# A hub's answer: a record (at most MAX_RECORD_BYTES) or a task's document (its order at
# most a few tens of KiB), with room to spare.
MAX_ANSWER_BYTES = MAX_RECORD_BYTES + 256 * 1024
MAX_ANSWER_DEPTH = 16
_log = logging.getLogger("confide.sms")


class RecordSource(Protocol):
    """Where records and tasks come from (the hub): None when it does not know them;
    HubUnavailableError when it does not answer."""

    def fetch_record(self, address: str) -> SignedRecord | None: ...

    def fetch_task(self, task_id: str) -> dict[str, Any] | None: ...


@runtime_checkable
class DeploymentSource(Protocol):
    """A source that can say which deployment it serves (the hub's ``/v1/info``)."""

    def deployment(self) -> str: ...


class HttpRecordSource:
    """The hub over HTTP: ``GET {hub}/v1/records/{address}``, ``GET {hub}/v1/tasks/{task}``
    and ``GET {hub}/v1/info``, each with ``timeout`` seconds."""

    def __init__(self, hub_url: str, timeout: float = 5.0) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def _get(self, path: str) -> Any | None:
        """The JSON document the hub answers (None: 404), read up to MAX_ANSWER_BYTES and
        MAX_ANSWER_DEPTH levels: the hub is untrusted, and its answer is read on a thread
        that attestations wait for."""
        url = self.hub_url + path
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise HubUnavailableError(
                        f"the hub at {self.hub_url} answered {response.status_code} to GET {path}"
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise HubUnavailableError(
                            f"the hub at {self.hub_url} answered GET {path} with more than "
                            f"{MAX_ANSWER_BYTES} bytes"
                        )
        except httpx.HTTPError as exc:
            raise HubUnavailableError(f"the hub at {self.hub_url} did not answer: {exc}") from None
        try:
            return loads_bounded(bytes(body), MAX_ANSWER_DEPTH)
        except (ValueError, RecursionError):
            raise HubUnavailableError(
                f"the hub at {self.hub_url} answered GET {path} with no JSON"
            ) from None

    def fetch_record(self, address: str) -> SignedRecord | None:
        document = self._get(f"/v1/records/{address}")
        if document is None:
            return None
        try:
            return SignedRecord.from_json(document)
        except RecordError as exc:
            raise RegistryError(f"the hub's record {address} is malformed: {exc}") from None

    def fetch_task(self, task_id: str) -> dict[str, Any] | None:
        document = self._get(f"/v1/tasks/{task_id}")
        if document is not None and not isinstance(document, dict):
            raise RegistryError(f"the hub's document of task {task_id} is not an object")
        return document

    def deployment(self) -> str:
        info = self._get("/v1/info")
        deployment = info.get("deployment_id") if isinstance(info, dict) else None
        if not isinstance(deployment, str) or not deployment:
            raise HubUnavailableError(f"the hub at {self.hub_url} names no deployment_id")
        return deployment


class HubRegistry:
    """The product's :class:`~confide.sms.registry.Registry` (see the module)."""

    def __init__(
        self,
        engine: Engine,
        source: RecordSource | None,
        deployment: str | None,
        *,
        refresh: float = REFRESH_SECONDS,
        clock: Any = time.time,
    ) -> None:
        self.engine = engine
        self.source = source
        self.keeper = RecordKeeper(engine)
        self.refresh = refresh
        self.clock = clock
        self._given = deployment
        self._deployment: str | None = None
        self._pin_tried = -PIN_RETRY_SECONDS
        self._views: dict[str, tuple[OwnerRecord | None, float]] = {}
        self._lock = threading.Lock()

    # -- the hub's deployment -------------------------------------------------------------

    @property
    def deployment(self) -> str | None:
        """The hub deployment records must name (None: no hub known yet)."""
        moment = time.monotonic()
        if (
            self._deployment is None
            and self.source is not None
            and moment - self._pin_tried >= PIN_RETRY_SECONDS
        ):
            self._pin_tried = moment
            self.pin()  # at first contact (not more often than PIN_RETRY_SECONDS)
        return self._deployment

    def pin(self) -> str | None:
        """Record the hub's deployment at first contact (given at construction, or asked
        of the source); ConfideError if another one was recorded before. Without one
        (no hub, or it does not answer), the one recorded before, if any."""
        deployment = self._given
        if deployment is None and isinstance(self.source, DeploymentSource):
            try:
                deployment = self.source.deployment()
            except HubUnavailableError as exc:
                _log.warning("%s: the hub's deployment is pinned at first contact", exc)
        if deployment is None:
            known = recorded(self.engine, SERVICE, {}).get(HUB_DEPLOYMENT)
            self._deployment = known
            return known
        pinned = recorded(self.engine, SERVICE, {HUB_DEPLOYMENT: deployment})[HUB_DEPLOYMENT]
        if pinned != deployment:
            raise ConfideError(
                f"the hub serves deployment {deployment!r}, but this sms pinned deployment "
                f"{pinned!r} at its first contact: records of another deployment are not "
                f"relied on (a new hub needs a new sms database)"
            )
        self._deployment = pinned
        return pinned

    # -- records --------------------------------------------------------------------------

    def learn(self, record: OwnerRecord) -> None:
        """A record kept now (an owner's push): this sms's view of it at once."""
        with self._lock:
            known = self._views.get(record.address)
            if known is None or known[0] is None or known[0].sequence <= record.sequence:
                self._views[record.address] = (record, time.monotonic())

    def record(self, address: str) -> OwnerRecord | None:
        """The highest verified sequence this sms has of ``address`` (kept, or fetched
        and then kept); RegistryError naming a record the hub served that does not
        verify when there is nothing better."""
        address = address.lower()
        moment = time.monotonic()
        with self._lock:
            view = self._views.get(address)
        if view is not None and moment - view[1] < self.refresh:
            return view[0]
        deployment = self.deployment
        best = self._kept(address, deployment)
        refused: str | None = None
        if self.source is not None:
            best, refused = self._fetched(self.source, address, deployment, best)
        if best is None and refused is not None:
            raise RegistryError(refused)
        if best is not None:
            with self._lock:
                if len(self._views) >= VIEWS_KEPT:
                    self._views.clear()
                known = self._views.get(address)
                # An owner's push learnt meanwhile (a removed member) is never replaced
                # by the older record this lookup read before it.
                if known is not None and known[0] is not None and known[0].sequence > best.sequence:
                    return known[0]
                self._views[address] = (best, moment)
        return best

    def _kept(self, address: str, deployment: str | None) -> OwnerRecord | None:
        kept = self.keeper.kept(address)
        if kept is None:
            return None
        try:
            return self.keeper.verified(kept, deployment)
        except RecordError as exc:  # a row edited in the database, another hub's record
            _log.warning("a kept record is not relied on: %s", exc)
            return None

    def _fetched(
        self, source: RecordSource, address: str, deployment: str | None, best: OwnerRecord | None
    ) -> tuple[OwnerRecord | None, str | None]:
        """``best`` or the hub's record of ``address`` when it verifies and is higher
        (then kept), and why the hub's was refused (None if it was not)."""
        try:
            fetched = source.fetch_record(address)
        except HubUnavailableError:
            if best is None:
                raise
            return best, None  # the kept one stands
        except RegistryError as exc:
            return best, str(exc)
        if fetched is None:
            return best, None
        try:
            if fetched.address != address:
                raise RecordError(
                    f"the hub answered record {address} with record {fetched.address}"
                )
            found = self.keeper.verified(fetched, deployment)
        except RecordError as exc:
            return best, str(exc)
        if best is None or found.sequence > best.sequence:
            self.keeper.keep_fetched(fetched, found, int(self.clock()))
            return found, None
        return best, None

    def _of_kind(self, address: str, kind: str) -> OwnerRecord | None:
        record = self.record(address)
        if record is not None and record.kind != kind:
            raise RegistryError(f"{address} is a {record.kind} record, not a {kind} record")
        return record

    def app(self, address: str) -> AppRecord | None:
        record = self._of_kind(address, "app")
        if record is None:
            return None
        logs = dict(record.fields).get("logs") is True  # fail closed
        return AppRecord(record.address, record.owner, frozenset({record.measurement}), logs)

    def dataset(self, address: str) -> DatasetRecord | None:
        record = self._of_kind(address, "dataset")
        if record is None:
            return None
        return DatasetRecord(record.address, record.owner, str(record.field("checksum")))

    def workerpool(self, address: str) -> WorkerpoolRecord | None:
        record = self._of_kind(address, "workerpool")
        if record is None:
            return None
        return WorkerpoolRecord(record.address, record.owner, record.members, record.requesters)

    def is_member(self, workerpool: str, worker: str) -> bool:
        pool = self.workerpool(workerpool)
        return pool is not None and worker.lower() in pool.members

    # -- tasks ----------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskRecord | None:
        """The hub's task (fetched at every lookup: its lease changes at each claim)."""
        if self.source is None:
            return None
        document = self.source.fetch_task(task_id)
        return None if document is None else task_from_document(task_id, document)


def task_from_document(task_id: str, document: dict[str, Any]) -> TaskRecord:
    """The hub's ``GET /v1/tasks/{task}`` document as the sms uses it: the requester's
    order and signature, and the current lease. RegistryError when it is malformed or
    holds another task's order (the task id derives from the order)."""
    try:
        order = TaskOrder.from_json(document.get("order"))
        signature = document.get("signature")
        if not isinstance(signature, str) or len(signature) > 200:
            raise RegistryError("signature is not a hex string")
        lease = document.get("lease")
        token = worker = ""
        if lease is not None:
            if not isinstance(lease, dict):
                raise RegistryError("lease is not an object")
            given, holder = lease.get("token"), lease.get("worker")
            if not isinstance(given, str) or not isinstance(holder, str) or len(given) > 128:
                raise RegistryError("lease is not {token, worker}")
            token, worker = given, normalise_address(holder)
    except (ConfideError, AuthError) as exc:
        raise RegistryError(f"the hub's document of task {task_id} is malformed: {exc}") from None
    if order.task_id() != task_id.lower():
        raise RegistryError(
            f"the hub's document of task {task_id} holds the order of another task "
            f"({order.task_id()}): orders are the requester's"
        )
    return TaskRecord(order, signature, token, worker)
