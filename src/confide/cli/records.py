"""What ``app``, ``dataset`` and ``workerpool`` commands share: showing a record the hub
keeps (its owner's signature checked here, not taken from the hub) and listing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from confide.cli.output import emit_json, say
from confide.errors import ConfideError

if TYPE_CHECKING:
    from confide.client.platform import Platform


def verified_view(platform: Platform, kind: str, text: str) -> dict[str, Any]:
    """The record ``text`` (an address, or a name on the hub) names, as its owner signed
    it for this hub's deployment: ``{"address", "kind", "owner", "name", "sequence",
    <its fields>, "signature"}``."""
    from confide.client.hub import verified_record  # noqa: PLC0415
    from confide.client.orders import resolve  # noqa: PLC0415

    address = resolve(platform, kind, text)
    record = verified_record(platform.hub, address, kind)
    signed = platform.hub.record(address)
    return {
        "address": record.address,
        **record.to_json(),
        "signature": "" if signed is None else signed.signature,
    }


def print_view(view: dict[str, Any], json_out: bool, extra: dict[str, Any] | None = None) -> None:
    document = {**view, **(extra or {})}
    if json_out:
        emit_json(document)
        return
    say(f"{view['kind']} {view['address']}")
    for key in sorted(document):
        if key in {"address", "kind", "signature"}:
            continue
        value = document[key]
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "(none)"
        elif value is None:
            value = "(any)" if key == "requesters" else "(none)"
        say(f"  {key:<12} {value}")
    say("  signed by its owner: verified here (the hub cannot alter it)")


def print_list(platform: Platform, kind: str, owner: str | None, json_out: bool) -> None:
    views = platform.hub.views(kind, owner)
    listed = [
        {key: view.get(key) for key in ("address", "name", "owner", "sequence")}
        | {k: v for k, v in view.items() if k not in {"signed", "kind"}}
        for view in views
    ]
    if json_out:
        emit_json(listed)
        return
    if not listed:
        say(f"no {kind}s" + (f" owned by {owner}" if owner else ""))
        return
    for view in listed:
        say(f"{view['address']}  {view.get('name')}  owner {view.get('owner')}")


def need_address(text: str, what: str) -> str:
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    try:
        return normalise_address(text)
    except ConfideError:
        raise ConfideError(f"{what} {text!r} is not an address (0x and 40 hex)") from None
