"""Planning a release: what a session's service or a task may get, and under which policy.

A plan is read before the evidence is verified (on one read connection: for a session,
one statement holds its nonce, its volumes' tags and its secrets), so that a request
without a live nonce costs a read and nothing more. It carries the policy (the
session's or the order's, intersected with the release policy of every secret it
releases), the configuration to seal, and the version of each secret it read, which the
grant's transaction rechecks.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from confide.attestation.measurement import Measurement
from confide.attestation.policy import Policy, parse_tdx_pins
from confide.db.stores import DatabaseNonceStore, check_length
from confide.sms.attest.orders import OrderFacts, OrderValidator, order_policy
from confide.sms.attest.queries import current_tags, plan_read
from confide.sms.attest.request import (
    AttestationRefusedError,
    AttestRequest,
    SessionTarget,
    TargetNotFoundError,
    TaskTarget,
)
from confide.sms.secret_queries import BATCH
from confide.sms.secrets import SecretNotFoundError, SecretRef, StoredSecret, checked
from confide.sms.service import Sms
from confide.sms.sessions import StoredSession, session_secret_ref, volume_key_ref
from confide.sms.tasks import TaskOrder, TaskRecord

CONFIG_FORMAT = "confide-config-v1"
SHAPES_KEPT = 1024  # session services whose shape a Planner remembers
_SECRET_REF = re.compile(r"\$\$confide:secrets:([A-Za-z0-9_-]{1,64})\$\$")


@dataclass
class Plan:
    """A release being prepared: the policy so far, the configuration, what is released."""

    policy: Policy
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # holds secret values
    released: list[str] = field(default_factory=list)  # secret labels with versions
    versions: list[tuple[SecretRef, int]] = field(default_factory=list)  # re-checked at grant
    scope: str = ""
    audience: str = ""
    session: StoredSession | None = None  # the version released from (a session target)
    order: TaskOrder | None = None  # the order released for (a task target)


@dataclass(frozen=True)
class ServiceShape:
    """One service of one session version, as an attestation uses it: its policy, the
    session secrets it references and the volumes it may use, with their keys' refs."""

    service: dict[str, Any] = field(repr=False)
    policy: Policy
    refs: Mapping[str, SecretRef]  # secret name -> where the session keeps it (sorted)
    volumes: list[dict[str, Any]]
    keys: Mapping[str, SecretRef]  # volume name -> where its key is kept

    @classmethod
    def of(cls, head: StoredSession, name: str) -> ServiceShape:
        document = head.document
        service = next((s for s in document["services"] if s["name"] == name), None)
        if service is None:
            raise AttestationRefusedError(
                f"service {name!r} is not in session {head.owner}/{head.name}"
            )
        security = document["security"]
        policy = Policy(
            measurements=frozenset(Measurement.parse(m) for m in service["measurements"]),
            tolerate=frozenset(security["tolerate"]),
            ignore_advisories=frozenset(security["ignore_advisories"]),
            tdx_pins=parse_tdx_pins(service.get("tdx"), f"service {name!r}"),
        )
        refs = {
            secret: session_secret_ref(head.owner, head.name, head.hash, secret)
            for secret in sorted(_references(service))
        }
        volumes = [v for v in document["volumes"] if v["name"] in service["volumes"]]
        keys = {v["name"]: volume_key_ref(head.owner, head.name, v["name"]) for v in volumes}
        return cls(service, policy, refs, volumes, keys)


class Planner:
    def __init__(self, sms: Sms, nonces: DatabaseNonceStore, orders: OrderValidator) -> None:
        self.sms = sms
        self.nonces = nonces
        self.orders = orders
        self._shapes: dict[tuple[str, str, str, str], ServiceShape] = {}

    # -- sessions ---------------------------------------------------------------------

    def session_plan(
        self, request: AttestRequest, target: SessionTarget, connection: Connection, now: int
    ) -> Plan:
        sessions = self.sms.sessions
        # A version read before is not read again: whether it is still current is checked
        # in the grant's transaction (the recheck), where it must be checked anyway.
        head = sessions.known_version(target.owner, target.name, target.hash)
        if head is None:
            head = sessions.current_version(target.owner, target.name, target.hash, connection)
        if head is None:
            raise TargetNotFoundError(
                f"session {target.owner}/{target.name} has no current version {target.hash} "
                f"(the enclave was started for another version, or another session)"
            )
        shape = self._shape(head, request.service)
        service = shape.service
        plan = Plan(
            shape.policy,
            scope=f"{target.owner}/{target.name}",
            audience=f"session:{target.owner}/{target.name}",
            session=head,
        )
        tags, found = self._plan_read(head, shape, request.nonce, now, connection)
        values = {
            name: _session_secret(ref, found, plan, f"session secret {name!r}")
            for name, ref in shape.refs.items()
        }
        plan.config = {
            "format": CONFIG_FORMAT,
            "session": {"owner": target.owner, "name": target.name, "hash": head.hash},
            "service": request.service,
            "command": _inject(service["command"], values),
            "pwd": service["pwd"],
            "environment": {k: _inject(v, values) for k, v in service["environment"].items()},
            "volumes": _volumes(shape.volumes, shape.keys, found, tags),
        }
        # A volume's key gets a new version with every push of the volume: checked again
        # at the grant, so an attestation that spans a push is refused, not handed the
        # version the session has just moved past.
        plan.versions += [(ref, found[ref].version) for ref in shape.keys.values() if ref in found]
        return plan

    def _plan_read(
        self,
        head: StoredSession,
        shape: ServiceShape,
        nonce: bytes,
        now: int,
        connection: Connection,
    ) -> tuple[dict[str, str | None], dict[SecretRef, StoredSecret]]:
        """The nonce (AttestationError unless it is live), the volumes' tags and every
        secret the service may get (its own and its volumes' keys), in one statement
        (up to BATCH of each; more take a statement per BATCH). A secret is decrypted only
        once the nonce is found live."""
        check_length(nonce)
        volumes = [v["name"] for v in shape.volumes]
        wanted = checked([*shape.refs.values(), *shape.keys.values()])
        if len(wanted) > BATCH or len(volumes) > BATCH:  # rare: the nonce read first
            self.nonces.peek(connection, nonce, now)
            tags = current_tags(head.owner, head.name, volumes, connection)
            return tags, self.sms.secrets.release_many(wanted, connection)
        rows = plan_read(connection, head.owner, head.name, nonce, volumes, wanted)
        first = rows[0]  # the nonce and the tags, on every row (one without secrets too)
        expires = first.nonce_expires
        DatabaseNonceStore.require_live(None if expires is None else int(expires), now)
        tags = {
            volume: None if first[i] is None else str(first[i]) for i, volume in enumerate(volumes)
        }
        return tags, self.sms.secrets.open_rows(wanted, rows if wanted else [])

    def _shape(self, head: StoredSession, name: str) -> ServiceShape:
        """What a session version says of one of its services, worked out once per
        version (a version's document never changes); AttestationRefusedError if the
        version has no such service."""
        key = (head.owner, head.name, head.hash, name)
        shape = self._shapes.get(key)
        if shape is None:
            shape = ServiceShape.of(head, name)
            if len(self._shapes) >= SHAPES_KEPT:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    # -- tasks ------------------------------------------------------------------------

    def task_plan(
        self,
        request: AttestRequest,
        target: TaskTarget,
        record: TaskRecord,
        facts: OrderFacts,
        connection: Connection,
        now: int,
    ) -> Plan:
        """The order's review (``record``: who asks was checked by
        :meth:`OrderValidator.claim`; ``facts``: its records, looked up): refused with
        every problem it names, or planned from the secrets it read."""
        review = self.orders.review(record.order, record.signature, connection, facts, now)
        if review.problems:
            raise AttestationRefusedError(*review.problems)
        order, found = record.order, review.found
        plan = Plan(
            order_policy(order),
            scope=target.task_id,
            audience=f"task:{target.task_id}",
            order=order,
        )
        env: dict[str, str] = {"IEXEC_TASK_ID": target.task_id}
        developer = (
            None if review.developer is None else self._release(review.developer, plan, found)
        )
        if developer is not None:  # optional: None if not pushed
            value = _utf8(developer.value, "the app developer secret")
            env["IEXEC_APP_DEVELOPER_SECRET"] = env["IEXEC_APP_DEVELOPER_SECRET_1"] = value
        for index, ref in review.mapped:  # each exists (the review says so otherwise)
            secret = self._release(ref, plan, found)
            assert secret is not None  # noqa: S101 - reviewed
            env[f"IEXEC_REQUESTER_SECRET_{index}"] = _utf8(
                secret.value, f"requester secret {ref.name!r}"
            )
        dataset = None
        if review.dataset_key is not None:
            stored = self._release(review.dataset_key, plan, found)
            assert stored is not None  # noqa: S101 - reviewed
            dataset = {"address": order.dataset, "key": base64.b64encode(stored.value).decode()}
        result = None if review.result_key is None else found[review.result_key]
        plan.config = {
            "format": CONFIG_FORMAT,
            "task": {"id": target.task_id, "app": order.app, "requester": order.requester},
            "service": request.service,
            "environment": env,
            "dataset": dataset,
            "result_encryption_key": None if result is None else result.value.hex(),
            # Whether the app's logs may reach the requester: its owner's word (the app
            # record), sealed to the enclave, so that the worker cannot turn it on.
            "app_logs": review.app is not None and review.app.logs,
        }
        return plan

    def _release(
        self, ref: SecretRef, plan: Plan, found: Mapping[SecretRef, StoredSecret]
    ) -> StoredSecret | None:
        """The secret read into ``found`` (None if it does not exist), its release policy
        added to the plan's, its version recorded for the audit entry and the grant's
        recheck."""
        stored = found.get(ref)
        if stored is None:
            return None
        plan.policy = plan.policy.intersect(
            stored.policy.to_policy(allow_sim=self.sms.config.allow_sim)
        )
        plan.released.append(f"{ref.label()}@{stored.version}")
        plan.versions.append((ref, stored.version))
        return stored


def _session_secret(
    ref: SecretRef, found: Mapping[SecretRef, StoredSecret], plan: Plan, what: str
) -> str:
    # A session's own secrets follow the session's policy (nothing to intersect).
    stored = found.get(ref)
    if stored is None:  # the session's document declares every secret it references
        raise SecretNotFoundError(f"secret {ref.label()} does not exist")
    plan.released.append(f"{ref.label()}@{stored.version}")
    plan.versions.append((ref, stored.version))
    return _utf8(stored.value, what)


def _volumes(
    volumes: list[dict[str, Any]],
    keys: Mapping[str, SecretRef],
    found: Mapping[SecretRef, StoredSecret],
    tags: Mapping[str, str | None],
) -> list[dict[str, Any]]:
    """Each volume the service may use (``volumes``), with its key (read into ``found``)
    and the tag it must have (``tags``).

    An output volume's key is made on first use; an input volume must have been pushed by
    the session's owner (its key is theirs).
    """
    result = []
    for volume in volumes:
        stored = found.get(keys[volume["name"]])
        if stored is None and volume["mode"] != "output":
            raise AttestationRefusedError(
                f"input volume {volume['name']!r} has no key yet: its owner pushes it with "
                f"the volume"
            )
        result.append(
            {
                "name": volume["name"],
                "mode": volume["mode"],
                "path": volume["path"],
                # None: made and stored when the grant is recorded
                "key": None if stored is None else stored.value.hex(),
                "tag": tags[volume["name"]],
            }
        )
    return result


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise AttestationRefusedError(
            f"{what} is not UTF-8 text, so it cannot be an environment variable"
        ) from None


def _references(service: dict[str, Any]) -> set[str]:
    texts = [service["command"], *service["environment"].values()]
    return {name for text in texts for name in _SECRET_REF.findall(text)}


def _inject(text: str, values: Mapping[str, str]) -> str:
    return _SECRET_REF.sub(lambda match: values[match[1]], text)
