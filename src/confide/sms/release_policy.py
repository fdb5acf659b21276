"""A secret's release policy: which TEEs may receive it, and (dataset keys) for whom.

Set by the secret's owner when pushing (``--tee sgx,tdx``, ``--tolerate …``, and for
dataset keys ``--app-measurement``, ``--requester``, ``--workerpool``). At attestation the
sms enforces the intersection of the session's or task's policy and the policy of every
secret it would release (anti-downgrade: a secret pushed for hardware at UpToDate is never
released to a simulation or an out-of-date platform, whatever the session tolerates).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confide.attestation.measurement import HARDWARE_TEES, TEE_TYPES, Measurement
from confide.attestation.policy import TOLERATIONS, Policy
from confide.crypto.wallet import normalise_address
from confide.errors import AttestationError, AuthError, SecretError

QUERY_OPTIONS = ("tee", "tolerate", "app", "any-app", "requester", "workerpool")
_RESTRICTIONS = ("app", "any-app", "requester", "workerpool")  # dataset keys only


@dataclass(frozen=True)
class ReleasePolicy:
    tee: frozenset[str] | None = None  # None: the default (hardware; sim where allowed)
    tolerate: frozenset[str] = frozenset()
    apps: frozenset[Measurement] | None = None  # dataset keys: only these app measurements
    requesters: frozenset[str] | None = None  # dataset keys: only for these requesters
    workerpools: frozenset[str] | None = None  # dataset keys: only on these workerpools
    # A dataset key its owner releases to any app, said explicitly (``any-app=true``;
    # CLI ``--any-app``): without it a key names the app measurements that may get it.
    any_app: bool = False

    def is_default(self) -> bool:
        return self == ReleasePolicy()

    def to_policy(self, *, allow_sim: bool) -> Policy:
        """The attestation policy this secret's release needs (measurements: any)."""
        if self.tee is None:
            tees = set(HARDWARE_TEES) | ({"sim"} if allow_sim else set())
            tolerate = set(self.tolerate) | ({"simulation"} if allow_sim else set())
            return Policy(tee_types=frozenset(tees), tolerate=frozenset(tolerate))
        return Policy(tee_types=self.tee, tolerate=self.tolerate)

    def refusals(self, *, measurement: Measurement, requester: str, workerpool: str) -> list[str]:
        """Why this secret may not go to that task (empty when it may)."""
        reasons: list[str] = []
        if self.apps is not None and measurement not in self.apps:
            reasons.append(f"not released to app measurement {measurement.short()}")
        if self.requesters is not None and requester.lower() not in self.requesters:
            reasons.append(f"not released for requester {requester}")
        if self.workerpools is not None and workerpool.lower() not in self.workerpools:
            reasons.append(f"not released on workerpool {workerpool}")
        return reasons

    def to_json(self) -> dict[str, Any]:
        """The policy's JSON; ``any_app`` appears only when set, so that every policy
        stored before it existed keeps its canonical form (and its values their AAD)."""

        def listed(values: frozenset[Any] | None) -> list[str] | None:
            return None if values is None else sorted(str(v) for v in values)

        document: dict[str, Any] = {
            "tee": listed(self.tee),
            "tolerate": sorted(self.tolerate),
            "apps": listed(self.apps),
            "requesters": listed(self.requesters),
            "workerpools": listed(self.workerpools),
        }
        if self.any_app:
            document["any_app"] = True
        return document

    def canonical(self) -> str:
        """ "" for the default, else canonical JSON (stored, and bound into the AAD)."""
        if self.is_default():
            return ""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def query_items(self) -> list[tuple[str, str]]:
        """The policy as a push's (signed) query parameters; :meth:`from_query` reads it."""
        items: list[tuple[str, str]] = []
        if self.tee is not None:
            items.append(("tee", ",".join(sorted(self.tee))))
        if self.tolerate:
            items.append(("tolerate", ",".join(sorted(self.tolerate))))
        items += [("app", str(m)) for m in sorted(self.apps or ())]
        if self.any_app:
            items.append(("any-app", "true"))
        items += [("requester", a) for a in sorted(self.requesters or ())]
        items += [("workerpool", a) for a in sorted(self.workerpools or ())]
        return items

    @classmethod
    def from_query(cls, items: Iterable[tuple[str, str]], *, restrictable: bool) -> ReleasePolicy:
        """The policy given with a push: ``tee`` and ``tolerate``, and for a dataset key
        (``restrictable``) ``app`` (typed measurement), ``requester`` and ``workerpool``
        (addresses); each comma-separated or repeated. Refusals name the bad value."""
        given: dict[str, list[str]] = {}
        for key, value in items:
            if key not in QUERY_OPTIONS:
                raise SecretError(
                    f"unknown release policy option {key!r} (known: {', '.join(QUERY_OPTIONS)})"
                )
            if key in _RESTRICTIONS and not restrictable:
                raise SecretError(
                    f"{key!r}: only a dataset key can be restricted to apps, requesters or "
                    f"workerpools"
                )
            values = [v.strip() for v in value.split(",")]
            if "" in values:
                raise SecretError(f"release policy option {key!r} has an empty value")
            given.setdefault(key, []).extend(values)
        tee = _known(given.get("tee"), "TEE type", frozenset(TEE_TYPES))
        any_app = given.get("any-app")
        if any_app is not None and any_app != ["true"]:
            raise SecretError("any-app is given once, as true")
        apps = given.get("app")
        if any_app and apps is not None:
            raise SecretError("any-app=true and app=… contradict each other: give one")
        try:
            return cls(
                tee=tee,
                tolerate=_known(given.get("tolerate"), "toleration", TOLERATIONS) or frozenset(),
                apps=None if apps is None else frozenset(Measurement.parse(a) for a in apps),
                requesters=_given_addresses(given.get("requester"), "requester"),
                workerpools=_given_addresses(given.get("workerpool"), "workerpool"),
                any_app=any_app is not None,
            )
        except AttestationError as exc:
            raise SecretError(f"app: {exc}") from None

    @classmethod
    def from_json(cls, data: Any) -> ReleasePolicy:
        if data in (None, "", {}):
            return cls()
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise SecretError("a release policy is a JSON object") from None
        if not isinstance(data, dict):
            raise SecretError("a release policy is a JSON object")
        unknown = set(data) - {"tee", "tolerate", "apps", "requesters", "workerpools", "any_app"}
        if unknown:
            raise SecretError(f"unknown release policy fields {sorted(unknown)}")
        tee = _strings(data.get("tee"), "tee")
        if tee is not None and (not tee or not tee <= set(TEE_TYPES)):
            raise SecretError(f"tee must name some of {', '.join(TEE_TYPES)}")
        tolerate = _strings(data.get("tolerate"), "tolerate") or frozenset()
        if not tolerate <= TOLERATIONS:
            raise SecretError(f"unknown tolerations {sorted(tolerate - TOLERATIONS)}")
        apps = _strings(data.get("apps"), "apps")
        any_app = data.get("any_app", False)
        if any_app is not True and any_app is not False:
            raise SecretError("release policy: any_app must be true or false")
        if any_app and apps is not None:
            raise SecretError("release policy: any_app and apps contradict each other")
        try:
            return cls(
                tee=tee,
                tolerate=tolerate,
                apps=None if apps is None else frozenset(Measurement.parse(a) for a in apps),
                requesters=_addresses(data.get("requesters"), "requesters"),
                workerpools=_addresses(data.get("workerpools"), "workerpools"),
                any_app=any_app,
            )
        except AuthError as exc:
            raise SecretError(str(exc)) from None
        except Exception as exc:
            if isinstance(exc, SecretError):
                raise
            raise SecretError(f"release policy: {exc}") from None


def _strings(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SecretError(f"release policy: {where} must be a list of strings")
    return frozenset(value)


def _addresses(value: Any, where: str) -> frozenset[str] | None:
    names = _strings(value, where)
    return None if names is None else frozenset(normalise_address(n) for n in names)


def _known(values: list[str] | None, what: str, known: frozenset[str]) -> frozenset[str] | None:
    if values is None:
        return None
    lowered = frozenset(v.lower() for v in values)
    bad = sorted(lowered - known)
    if bad:
        raise SecretError(f"unknown {what} {bad[0]!r} (known: {', '.join(sorted(known))})")
    return lowered


def _given_addresses(values: list[str] | None, what: str) -> frozenset[str] | None:
    if values is None:
        return None
    try:
        return frozenset(normalise_address(v) for v in values)
    except AuthError as exc:
        raise SecretError(f"{what}: {exc}") from None
