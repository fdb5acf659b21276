"""Deploying apps, datasets and workerpools: upload what they need, sign their record with
the owner's wallet, register it with the hub **and** the sms.

The sms keeps the highest sequence it has seen per record, and it relies only on records
whose owner's signature it checked; sending each new record to it as well as to the hub
means a hub can neither replay an older one (a removed member, an older measurement)
nor withhold this one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confide.attestation.measurement import Measurement
from confide.client.archive import pack
from confide.client.hub import own_record
from confide.client.known import remember
from confide.client.platform import Platform
from confide.crypto.wallet import Wallet, normalise_address
from confide.errors import ConfideError
from confide.names import NAME
from confide.records import OwnerRecord, RecordError, SignedRecord, next_sequence

Progress = Callable[[int], None]


def publish(platform: Platform, signed: SignedRecord) -> dict[str, Any]:
    """Register ``signed`` with the sms, then with the hub; the hub's answer. The sms
    first: it is the one a release relies on, so a record the hub took but the sms did
    not (a removed member the hub then withholds) cannot happen."""
    if platform.records_dir is not None:
        remember(platform.records_dir, signed)
    platform.sms.push_record(signed)
    return platform.hub.put_record(signed)


def checked_name(name: str, what: str) -> str:
    if not NAME.fullmatch(name):
        raise RecordError(f"{what} name {name!r} is not allowed: 1 to 64 of A-Z a-z 0-9 _ -")
    return name


def upload_tree(platform: Platform, root: Path, progress: Progress | None) -> str:
    """Pack ``root`` deterministically, upload it, return its blob digest."""
    with tempfile.TemporaryDirectory(prefix="confide-pack-") as work:
        packed = pack(root, Path(work) / "blob.tar")
        answer = platform.storage.upload(packed.path, digest=packed.digest, progress=progress)
    return str(answer["digest"])


def packed_size(root: Path) -> int:
    """About the bytes :func:`upload_tree` sends (for a progress bar)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def deploy_app(
    platform: Platform,
    wallet: Wallet,
    bundle: Path,
    *,
    name: str | None = None,
    measurement: Measurement | None = None,
    progress: Progress | None = None,
    logs: bool = False,
) -> tuple[SignedRecord, dict[str, Any]]:
    """Measure the bundle (unless ``measurement`` says what the TEE build measures),
    upload it, sign and register its app record (``logs``: its tasks' logs may reach
    their requesters, sealed to them)."""
    from confide.bundle import measure_bundle, read_manifest  # noqa: PLC0415

    measured = measure_bundle(bundle)  # also checks it is a bundle
    app_name = checked_name(name or read_manifest(bundle).name, "app")
    digest = upload_tree(platform, bundle, progress)
    record = OwnerRecord.app(
        platform.hub.deployment(),
        wallet.address,
        app_name,
        bundle=digest,
        measurement=measurement or measured,
        logs=logs,
        sequence=_next(platform, wallet, "app", app_name),
    )
    signed = record.sign(wallet)
    return signed, publish(platform, signed)


def deploy_dataset(
    platform: Platform,
    wallet: Wallet,
    volume: Path,
    checksum: str,
    *,
    name: str | None = None,
    progress: Progress | None = None,
) -> tuple[SignedRecord, dict[str, Any]]:
    """Upload the encrypted volume as one blob; sign and register its dataset record, whose
    checksum is the volume's tag (a task order pins it; pre-compute refuses another)."""
    dataset_name = checked_name(name or volume.resolve().name, "dataset")
    digest = upload_tree(platform, volume, progress)
    record = OwnerRecord.dataset(
        platform.hub.deployment(),
        wallet.address,
        dataset_name,
        blob=digest,
        checksum=checksum,
        sequence=_next(platform, wallet, "dataset", dataset_name),
    )
    signed = record.sign(wallet)
    return signed, publish(platform, signed)


def deploy_workerpool(
    platform: Platform, wallet: Wallet, name: str, requesters: Iterable[str] | None
) -> tuple[SignedRecord, dict[str, Any]]:
    """A workerpool whose only member is its owner; ``requesters``: who may submit to it
    (None: anyone)."""
    pool_name = checked_name(name, "workerpool")
    record = OwnerRecord.workerpool(
        platform.hub.deployment(),
        wallet.address,
        pool_name,
        members={wallet.address},
        requesters=None if requesters is None else {normalise_address(r) for r in requesters},
        sequence=_next(platform, wallet, "workerpool", pool_name),
    )
    signed = record.sign(wallet)
    return signed, publish(platform, signed)


def change_members(
    platform: Platform, wallet: Wallet, pool: str, *, add: str = "", remove: str = ""
) -> tuple[SignedRecord, dict[str, Any]]:
    """A new whole-member-set record of our workerpool ``pool``, with a higher sequence."""
    current = own_record(platform.hub, pool, "workerpool", wallet.address, platform.records_dir)
    members = set(current.members)
    if add:
        worker = normalise_address(add)
        if worker in members:
            raise ConfideError(f"{worker} is already a member of workerpool {current.address}")
        members.add(worker)
    if remove:
        worker = normalise_address(remove)
        if worker == current.owner:
            raise ConfideError(
                f"{worker} owns workerpool {current.address}: its owner is always a member"
            )
        if worker not in members:
            raise ConfideError(f"{worker} is not a member of workerpool {current.address}")
        members.discard(worker)
    record = OwnerRecord.workerpool(
        current.deployment,
        current.owner,
        current.name,
        members=members,
        requesters=current.requesters,
        sequence=next_sequence(current.sequence),
    )
    signed = record.sign(wallet)
    return signed, publish(platform, signed)


def _next(platform: Platform, wallet: Wallet, kind: str, name: str) -> int:
    """A sequence above the one the hub keeps for this record, if it is one this wallet
    signed (a hub could answer an unsigned record of a huge sequence, to freeze the
    record: the sequences after it would be out of range)."""
    from confide.records import record_address  # noqa: PLC0415

    deployment = platform.hub.deployment()
    address = record_address(kind, deployment, wallet.address, name)
    kept = platform.hub.record(address)
    if kept is None:
        return next_sequence()
    try:
        record = kept.verify(deployment)
    except RecordError:
        return next_sequence()  # not what this wallet signed: ignore it
    if record.address != address:
        return next_sequence()
    return next_sequence(record.sequence)
