"""Task orders as ``confide app run`` builds them: options checked before anything is
created, then everything the order pins (the trusted sms's key, the app record's
measurement, the dataset record's checksum, the result key's SHA-256) filled in.

iExec's shapes: ``--tag tee,scone`` and ``tee,gramine`` are SGX frameworks (the order's
TEE is ``sgx``); ``tee,sim`` asks for the simulation TEE (and tolerates it); ``--secret``
takes ``index=name`` mappings, several to an option or the option repeated.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from confide.client.hub import verified_record
from confide.client.platform import Platform
from confide.client.sms import SmsClient
from confide.crypto.wallet import Wallet, normalise_address
from confide.errors import AuthError, ConfideError
from confide.names import NAME
from confide.records import record_address
from confide.sms.tasks import (
    CATEGORIES,
    MAX_ARGS_CHARS,
    MAX_ATTEMPTS,
    MAX_INPUT_FILES,
    MAX_MAPPED_SECRETS,
    MAX_VALIDITY_SECONDS,
    TaskOrder,
)

TAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tee,sgx": (("sgx",), ()),
    "tee,scone": (("sgx",), ()),
    "tee,gramine": (("sgx",), ()),
    "tee,tdx": (("tdx",), ()),
    "tee,sim": (("sim",), ("simulation",)),
}
_INDEX = re.compile(r"[1-9][0-9]{0,3}", re.ASCII)
_DURATION = re.compile(r"([0-9]+)([smhd])", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class RunOptionError(ConfideError):
    """An ``app run`` option that is malformed; refused before anything is created."""


def parse_tag(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``tee,sgx`` → (TEE types, tolerations) of the order."""
    key = ",".join(part.strip().lower() for part in text.split(","))
    if key not in TAGS:
        raise RunOptionError(f"--tag {text!r} is not one of {', '.join(TAGS)}")
    return TAGS[key]


def parse_secret_mappings(values: Iterable[str]) -> tuple[tuple[int, str], ...]:
    """``["1=x1 3=y", "2=z"]`` → ((1, "x1"), (2, "z"), (3, "y")); each malformed mapping
    (``1=``, ``0=x``, ``a=b``) or duplicate index refused, naming it."""
    found: dict[int, str] = {}
    for value in values:
        words = value.replace(",", " ").split()
        if not words:
            raise RunOptionError("--secret is given without an index=name mapping")
        for word in words:
            index_text, equals, name = word.partition("=")
            if not equals or not _INDEX.fullmatch(index_text) or int(index_text) > 1000:
                raise RunOptionError(
                    f"--secret {word!r} is not index=name with an index from 1 to 1000 "
                    f"(as in --secret 1=my-secret)"
                )
            if not NAME.fullmatch(name):
                raise RunOptionError(
                    f"--secret {word!r}: the secret name {name!r} is not 1 to 64 of A-Z a-z 0-9 _ -"
                )
            index = int(index_text)
            if index in found:
                raise RunOptionError(
                    f"--secret {word!r}: index {index} is already mapped to {found[index]!r}"
                )
            found[index] = name
    if len(found) > MAX_MAPPED_SECRETS:
        raise RunOptionError(f"--secret maps at most {MAX_MAPPED_SECRETS} secrets")
    return tuple(sorted(found.items()))


def parse_duration(text: str, option: str = "--valid-for") -> int:
    """``1h``, ``90m``, ``1d12h``, ``3600s`` → seconds; at most 7 days, more than none."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise RunOptionError(f"{option} {text!r} is not a duration such as 30m, 1h, 2d or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds <= MAX_VALIDITY_SECONDS:
        raise RunOptionError(f"{option} {text!r} must be more than 0 and at most 7 days")
    return seconds


def parse_input_files(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``URL#sha256=HEX`` each (several to an option, space-separated, or repeated)."""
    files: list[tuple[str, str]] = []
    for value in values:
        for word in value.split():
            url, marker, digest = word.partition("#sha256=")
            if not url.startswith(("https://", "http://")):
                raise RunOptionError(f"--input-files {word!r}: the URL is not http(s)")
            if not marker or not _HEX64.fullmatch(digest):
                raise RunOptionError(
                    f"--input-files {word!r}: give the file's SHA-256 as URL#sha256=<64 hex> "
                    f"(the enclave refuses a file that differs)"
                )
            files.append((url, digest.lower()))
    if len(files) > MAX_INPUT_FILES:
        raise RunOptionError(f"--input-files names at most {MAX_INPUT_FILES} files")
    return tuple(files)


def parse_category(text: str) -> str:
    category = text.strip().upper()
    if category not in CATEGORIES:
        raise RunOptionError(f"--category {text!r} is not one of {', '.join(CATEGORIES)}")
    return category


@dataclass(frozen=True)
class RunOptions:
    """Every ``app run`` option, parsed (the parse functions above)."""

    app: str
    workerpool: str
    tag: str | None = None  # None: tee,sim against `confide up` on this machine, else tee,sgx
    args: str = ""
    input_files: tuple[tuple[str, str], ...] = ()
    dataset: str | None = None
    secrets: tuple[tuple[int, str], ...] = ()
    category: str = "XS"
    valid_for: int = 3600
    max_attempts: int = 3
    encrypt_result: bool = True

    def __post_init__(self) -> None:
        if len(self.args) > MAX_ARGS_CHARS or "\x00" in self.args:
            raise RunOptionError(f"--args is at most {MAX_ARGS_CHARS} characters")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise RunOptionError(f"--max-attempts is from 1 to {MAX_ATTEMPTS}")


def resolve(platform: Platform, kind: str, text: str, me: str | None = None) -> str:
    """The address ``text`` names: an address as given; ``OWNER/NAME``, or a bare NAME of
    your own (``me``), derived here from the hub's deployment, the owner and the name
    (confide.records.record_address), never taken from the hub's list: a hub that lists
    another app under your app's name cannot make you sign an order for it. Only against
    the loopback ``confide up`` (whose hub is this machine's) may a bare NAME be someone
    else's, as its ``default`` workerpool is the operator's."""
    try:
        return normalise_address(text)
    except AuthError:
        pass
    owner, slash, name = text.rpartition("/")
    if not NAME.fullmatch(name):
        raise ConfideError(
            f"{text!r} does not name a {kind}: give its address (0x and 40 hex), NAME for one of "
            f"your own, or OWNER/NAME"
        )
    deployment = platform.hub.deployment()
    if slash:
        try:
            return record_address(kind, deployment, normalise_address(owner), name)
        except AuthError as exc:
            raise ConfideError(f"{text!r}: the owner is not a wallet address ({exc})") from None
    if me is not None:
        mine = record_address(kind, deployment, me, name)
        if platform.hub.record(mine) is not None or not platform.embedded():
            return mine
    if not platform.embedded():
        raise ConfideError(f"{text!r}: give the {kind}'s address or OWNER/NAME")
    views = [v for v in platform.hub.views(kind) if v.get("name") == name]
    if len(views) != 1:
        reason = "no" if not views else f"{len(views)}"
        raise ConfideError(
            f"the hub knows {reason} {kind} named {name!r}"
            + ("" if not views else ": give its address or OWNER/NAME")
        )
    return normalise_address(str(views[0]["address"]))


def check_secrets_exist(sms: SmsClient, requester: str, secrets: Iterable[tuple[int, str]]) -> None:
    missing = [name for _, name in secrets if not sms.requester_secret_exists(requester, name)]
    if missing:
        raise ConfideError(
            f"requester secret(s) {', '.join(repr(m) for m in missing)} of {requester} do not "
            f"exist at the sms {sms.base_url}: push them with `confide requester push-secret "
            f"NAME` first"
        )


def ensure_result_key(sms: SmsClient, wallet: Wallet, path: Path) -> str:
    """The SHA-256 of the requester's result public key, made (``path``, mode 0600) and
    registered with the sms on first need."""
    from confide.crypto.result_key import (  # noqa: PLC0415
        ResultKeyPair,
        public_key_from_file,
        result_key_sha256,
    )

    if path.exists():
        public = public_key_from_file(path)
    else:
        pair = ResultKeyPair.generate()
        pair.write(path, overwrite=False)
        public = pair.public_bytes
    digest = result_key_sha256(public)
    registered = sms.result_key(wallet.address)
    if registered is None or registered.get("sha256") != digest:
        sms.push_result_key(public)
    return digest


def build_order(
    platform: Platform, wallet: Wallet, options: RunOptions, result_key_path: Path
) -> TaskOrder:
    """The order ``options`` ask for, every pinned value fetched and checked."""
    hub = platform.hub
    tee, tolerate = parse_tag(options.tag or ("tee,sim" if platform.embedded() else "tee,sgx"))
    app = verified_record(hub, resolve(platform, "app", options.app, wallet.address), "app")
    pool = resolve(platform, "workerpool", options.workerpool, wallet.address)
    dataset = None
    if options.dataset is not None:
        address = resolve(platform, "dataset", options.dataset, wallet.address)
        dataset = verified_record(hub, address, "dataset")
    sms = platform.sms
    check_secrets_exist(sms, wallet.address, options.secrets)
    # the logs are sealed to the result key even when the result is not encrypted
    result_key = ensure_result_key(sms, wallet, result_key_path)
    return TaskOrder(
        requester=wallet.address,
        app=app.address,
        app_measurement=app.measurement,
        tee=tee,
        tolerate=tolerate,
        ignore_advisories=(),
        secrets=options.secrets,
        dataset=None if dataset is None else dataset.address,
        result_key=result_key,
        sms_key=sms.key().hex(),
        workerpool=pool,
        salt=os.urandom(16).hex(),
        dataset_checksum=None if dataset is None else str(dataset.field("checksum")),
        args=options.args,
        input_files=options.input_files,
        category=options.category,
        valid_until=int(time.time()) + options.valid_for,
        max_attempts=options.max_attempts,
        encrypt_result=options.encrypt_result,
    )
