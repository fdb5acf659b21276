"""``confide dapp push``'s session, made from an app developer's template.

The template comes with the app: it is not trusted. Before anything is created, what it
asks for is shown and held to what the command line says:
- the session's access policy is the caller's alone (read and update), plus each reader
  named with ``--reader``; the template's own policy is dropped;
- a toleration beyond ``simulation`` (``debug-mode``, ``outdated-tcb``…) and an ignored
  advisory are refused unless the command line repeats them (``--tolerate``,
  ``--ignore-advisory``);
- a service other than the one named with ``--service`` (the template's only service by
  default) is refused unless it is named too;
- a bundle given with ``--app DIR`` must measure to one of its service's measurements.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from confide.bundle.measure import measure_bundle
from confide.errors import ConfideError
from confide.sms.session_document import SessionDocument, parse_session

ALWAYS_TOLERATED = {"simulation"}  # development on `confide up`: the default


@dataclass(frozen=True)
class TemplateSession:
    document: SessionDocument
    service: str
    input_volume: str
    text: str  # the session to create, as YAML


def session_from_template(
    text: str,
    variables: dict[str, str],
    source: str,
    *,
    owner: str,
    services: Iterable[str] = (),
    readers: Iterable[str] = (),
    tolerate: Iterable[str] = (),
    ignore_advisories: Iterable[str] = (),
    bundle: Path | None = None,
) -> TemplateSession:
    template = parse_session(text, variables, source)
    named = set(services)
    defined = [s.name for s in template.services]
    if not named:
        if len(defined) != 1:
            raise ConfideError(
                f"the template defines services {defined}: name yours with --service"
            )
        named = set(defined)
    missing = sorted(named - set(defined))
    if missing:
        raise ConfideError(f"the template defines no service {missing[0]!r} ({defined})")
    extra = sorted(set(defined) - named)
    if extra:
        raise ConfideError(
            f"the template also defines service {extra[0]!r}: repeat --service {extra[0]} "
            f"to accept it (each service gets the session's volumes and secrets it lists)"
        )
    beyond = sorted(set(template.tolerate) - ALWAYS_TOLERATED - set(tolerate))
    if beyond:
        raise ConfideError(
            f"the template tolerates {beyond[0]!r}: repeat --tolerate {beyond[0]} to accept "
            f"a platform with that weakness"
        )
    ignored = sorted(set(template.ignore_advisories) - set(ignore_advisories))
    if ignored:
        raise ConfideError(
            f"the template ignores advisory {ignored[0]!r}: repeat --ignore-advisory "
            f"{ignored[0]} to accept it"
        )
    main = next(s for s in template.services if s.name in named)
    if bundle is not None:
        measurement = measure_bundle(bundle)
        if measurement not in main.measurements:
            listed = ", ".join(str(m) for m in main.measurements)
            raise ConfideError(
                f"the bundle {bundle} measures {measurement}, which service {main.name!r} of "
                f"the template does not list ({listed}): refused"
            )
    inputs = [v.name for v in template.volumes if v.name in main.volumes and v.mode == "input"]
    if len(inputs) != 1:
        raise ConfideError(
            f"service {main.name!r} reads {len(inputs)} input volumes: dapp push fills "
            f"exactly one (use confide volume push for each)"
        )
    document = _escaped(_document(template, owner, list(readers)))
    return TemplateSession(
        template, main.name, inputs[0], yaml.safe_dump(document, sort_keys=False)
    )


def describe(session: TemplateSession) -> list[str]:
    """What the template asks for, in lines a user reads before it is created (secret
    values are never shown: only whether the template sets one)."""
    document = session.document
    lines = [f"session {document.name!r} from the template:"]
    for service in document.services:
        measurements = ", ".join(str(m) for m in service.measurements)
        lines.append(f"  service {service.name!r}: {service.command!r} ({measurements})")
        lines.append(f"    working directory {service.pwd or '/'!r}")
        lines.append(f"    environment {sorted(k for k, _ in service.environment)}")
        lines.append(f"    volumes {list(service.volumes)}")
    for volume in document.volumes:
        lines.append(f"  volume {volume.name!r} ({volume.mode}) at {volume.path}")
    for secret in document.secrets:
        origin = "its value set by the template" if secret.value is not None else "made by the sms"
        lines.append(f"  secret {secret.name!r} ({secret.kind}): {origin}")
    lines.append(f"  tolerates {list(document.tolerate)}")
    lines.append(f"  ignores advisories {list(document.ignore_advisories)}")
    return lines


def _document(template: SessionDocument, owner: str, readers: list[str]) -> dict[str, Any]:
    services = []
    for service in template.services:
        entry = service.canonical()
        if entry["pwd"] is None:
            del entry["pwd"]
        services.append(entry)
    return {
        "name": template.name,
        "version": template.version,
        "predecessor": None,
        "access_policy": {"read": [owner, *readers], "update": [owner]},
        "services": services,
        "volumes": [{"name": v.name, "mode": v.mode, "path": v.path} for v in template.volumes],
        "secrets": [
            {"name": s.name, "kind": s.kind} | ({} if s.value is None else {"value": s.value})
            for s in template.secrets
        ],
        "security": {
            "tolerate": list(template.tolerate),
            "ignore_advisories": list(template.ignore_advisories),
        },
    }


_DOLLAR = re.compile(r"\$\$confide:secrets:[A-Za-z0-9_-]{1,64}\$\$|\$")


def _escaped(value: Any) -> Any:
    """The document with every ``$`` of its values written ``$$`` again (what the
    template's substitution turned into one ``$``), secret references kept as they are,
    so the sms parses it to the same values."""
    if isinstance(value, str):
        return _DOLLAR.sub(lambda m: "$$" if m[0] == "$" else m[0], value)
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    return value
