"""``python -m confide.runtime.session JOB_DIR``: one run of a CAS session's service (the
SCONE workflow's step 2, docs/scone-workflow.md), started by ``confide dapp run``.

The host (untrusted) hands over the app bundle, the session's name and version, the
service, and each volume's encrypted copy (``volumes/NAME.tar``, ciphertext only). Here:
the bundle is measured; fresh enclave keys attest for the session's service through the
relay; the configuration is opened only when the sms key pinned in the job signed it; each
input volume (and an output volume that has a version already) is decrypted into this
runtime's private tmpfs, refused unless its tag is the one the session names; the
session's command runs in a nested sandbox with the bundle read-only at ``/app`` and the
volumes at their paths (inputs read-only); each output volume is then encrypted with its
key and its new tag signed with the enclave's attested key, over the session version,
the volume, the tag it had, the new tag and the blob's digest (the message the sms's tag
route checks). Only ciphertext and ``out/report.json`` leave: plaintext never reaches
the job directory.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from confide.attestation.sim import SimAttester
from confide.bundle.measure import measure_bundle
from confide.client.archive import pack
from confide.client.enclave import attest_and_open
from confide.client.sms import SmsClient
from confide.crypto.keys import SymmetricKey
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.errors import ConfideError
from confide.jsonsafe import loads_bounded
from confide.relay.client import RelayChannel, RelayTransport
from confide.runtime.precompute import MAX_BUNDLE_BYTES, MAX_BUNDLE_FILES, extract
from confide.sandbox import Finished, Limits, Mount, SandboxError, SandboxSpec, run_in_given_kind
from confide.sms.volumes import TAG_LABEL, tag_message
from confide.volume.api import decrypt_tree, encrypt_tree, read_volume_info

FORMAT = "confide-session-job-v1"
MAX_JOB_BYTES = 64 * 1024
MAX_VOLUME_BYTES = 16 << 30
MAX_VOLUME_FILES = 1_000_000
APP_TARGET = "/app"
MAX_WALL_SECONDS = 24 * 3600
# Where a volume may not be mounted: over the system the sandbox shows the program (its
# tools and libraries, the limits' wrappers in /usr/bin) or the bundle and its /tmp.
SYSTEM_TOPS = frozenset(
    {
        "app",
        "bin",
        "boot",
        "dev",
        "etc",
        "home",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "var",
    }
)
APP_MEMORY_BYTES = 2 << 30  # the program's address space
APP_FILE_BYTES = 4 << 30  # the largest file it writes
_FIELDS = {
    "format",
    "sms_url",
    "sms_key",
    "owner",
    "session",
    "hash",
    "service",
    "tee",
    "sim_platform_key",
    "relay_fd",
    "wall_seconds",
    "volumes",
}


class SessionRunError(ConfideError):
    """The run refused or failed; the message says why (never a key or a byte)."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m confide.runtime.session JOB_DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    out = directory / "out"
    out.mkdir(exist_ok=True)
    try:
        report = run_session(directory, out)
    except ConfideError as exc:
        report = {"status": "FAILED", "error": str(exc)}
    except Exception as exc:  # a malformed job field, say: its type only, never its value
        report = {"status": "FAILED", "error": f"the run failed ({type(exc).__name__})"}
    (out / "report.json").write_text(json.dumps(report) + "\n")
    return 0


def load(directory: Path) -> dict[str, Any]:
    raw = (directory / "job.json").read_bytes()
    if len(raw) > MAX_JOB_BYTES:
        raise SessionRunError("job.json is too large")
    job = loads_bounded(raw, 4)
    if not isinstance(job, dict) or set(job) != _FIELDS or job["format"] != FORMAT:
        raise SessionRunError(f"job.json is not a {FORMAT} document")
    if job["tee"] != "sim":
        raise SessionRunError(f"tee {job['tee']}: only sim is built for session runs yet")
    fields_ok = (
        isinstance(job["volumes"], dict)
        and type(job["relay_fd"]) is int
        and type(job["wall_seconds"]) in (int, float)
        and 1 <= job["wall_seconds"] <= MAX_WALL_SECONDS
        and all(isinstance(job[k], str) for k in ("sms_url", "owner", "session", "service"))
        and all(_hex(job[k], 32) for k in ("sms_key", "sim_platform_key", "hash"))
    )
    if not fields_ok:
        raise SessionRunError("job.json: a field has the wrong type or value")
    return job


def _hex(value: Any, size: int) -> bool:
    try:
        return isinstance(value, str) and len(bytes.fromhex(value)) == size
    except ValueError:
        return False


def run_session(directory: Path, out: Path) -> dict[str, Any]:
    job = load(directory)
    channel = RelayChannel(job["relay_fd"])
    with tempfile.TemporaryDirectory(prefix="confide-session-") as private:
        work = Path(private)
        bundle = work / "app"
        extract(
            directory / "bundle.tar", bundle, max_bytes=MAX_BUNDLE_BYTES, max_files=MAX_BUNDLE_FILES
        )
        measurement = measure_bundle(bundle)
        keys = EnclaveKeys.generate()
        attester = SimAttester(
            SigningKey.from_seed(bytes.fromhex(job["sim_platform_key"])), measurement
        )
        client = SmsClient(job["sms_url"], transport=RelayTransport(channel))
        try:
            released = attest_and_open(
                client,
                attester,
                keys,
                sms_key=bytes.fromhex(job["sms_key"]),
                target={
                    "session": {"owner": job["owner"], "name": job["session"], "hash": job["hash"]}
                },
                service=job["service"],
            )
        finally:
            client.close()
            channel.close()  # nothing the program could reach
        # From here on the configuration holds keys and secret values, and the volumes
        # plaintext: what reaches report.json is fixed text, never an error's own words
        # (a decrypted file name, a command with a secret injected).
        config = released.config
        _check_paths(config)
        opened = _open_volumes(directory, work, job["volumes"], config["volumes"])
        try:
            finished = _run(bundle, config, opened, float(job["wall_seconds"]))
        except SandboxError:
            raise SessionRunError(
                "the session's command cannot run in the sandbox (its command, environment, "
                "working directory or a volume path is refused)"
            ) from None
        if not finished.ok:  # its output stays here: it may show what it decrypted
            return {"status": "FAILED", "error": f"the program ended with {finished.reason}"}
        subject = f"{job['owner'].lower()}/{job['session']}@{job['hash']}"
        reports = _seal_outputs(out, work, opened, keys, subject)
    return {"status": "COMPLETED", "measurement": str(measurement), "volumes": reports}


def _check_paths(config: dict[str, Any]) -> None:
    for volume in config["volumes"]:
        parts = Path(volume["path"]).parts
        if len(parts) < 2 or parts[0] != "/" or parts[1] in SYSTEM_TOPS or ".." in parts:
            raise SessionRunError(
                f"volume {volume['name']!r} is mounted at {volume['path']!r}: a volume goes "
                f"at an absolute path outside the system directories and /app"
            )
    if not str(config.get("pwd") or "/").startswith("/"):
        raise SessionRunError("the service's working directory is not an absolute path")


def _open_volumes(
    directory: Path, work: Path, copies: dict[str, Any], volumes: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], Path]]:
    """Each volume decrypted into the private tmpfs (an output with no version yet:
    empty), refused unless its copy opens to the tag the session names."""
    opened = []
    (work / "volumes").mkdir()
    (work / "encrypted").mkdir()
    for volume in volumes:
        name, tag = volume["name"], volume["tag"]
        plain = work / "volumes" / name
        copy = copies.get(name)
        if tag is None:
            if volume["mode"] == "input":
                raise SessionRunError(f"input volume {name!r} has no version in the session")
            plain.mkdir()
        else:
            if copy != f"volumes/{name}.tar":
                raise SessionRunError(f"volume {name!r}: the host handed over no copy of it")
            encrypted = work / "encrypted" / name
            try:
                extract(
                    directory / copy,
                    encrypted,
                    max_bytes=MAX_VOLUME_BYTES,
                    max_files=MAX_VOLUME_FILES,
                )
            except ConfideError:
                raise SessionRunError(
                    f"volume {name!r}: its copy is not a volume archive"
                ) from None
            key = SymmetricKey(bytes.fromhex(volume["key"]))
            try:
                decrypt_tree(encrypted, plain, key, expected_tag=tag)
            except ConfideError:  # its words may name a decrypted file: not shown
                raise SessionRunError(
                    f"volume {name!r} is not the session's current version {tag}: the copy "
                    f"handed over says it is {_stored_tag(encrypted)}, or does not open whole"
                ) from None
        opened.append((volume, plain))
    return opened


def _stored_tag(encrypted: Path) -> str:
    """The tag a volume copy claims (unverified: it did not open), for the refusal."""
    try:
        return read_volume_info(encrypted).stored_tag
    except ConfideError:
        return "unreadable"


def _run(
    bundle: Path, config: dict[str, Any], opened: list[tuple[dict[str, Any], Path]], wall: float
) -> Finished:
    mounts = [Mount(bundle, APP_TARGET)]
    mounts += [Mount(plain, v["path"], writable=v["mode"] == "output") for v, plain in opened]
    spec = SandboxSpec(
        argv=tuple(shlex.split(config["command"])),
        env={str(k): str(v) for k, v in (config.get("environment") or {}).items()},
        limits=Limits(
            wall_seconds=max(1.0, wall),
            memory_bytes=APP_MEMORY_BYTES,
            processes=64,
            file_bytes=APP_FILE_BYTES,
        ),
        mounts=tuple(mounts),
        tmpfs=("/tmp",),  # noqa: S108 (the program's own)
        cwd=config.get("pwd") or "/",
    )
    return run_in_given_kind(spec)


def _seal_outputs(
    out: Path,
    work: Path,
    opened: list[tuple[dict[str, Any], Path]],
    keys: EnclaveKeys,
    subject: str,
) -> dict[str, Any]:
    """Each output volume encrypted and packed in the private tmpfs (the digest signed is
    of bytes the host never had a chance to change), then copied out for the host."""
    reports = {}
    (out / "volumes").mkdir(exist_ok=True)
    (work / "sealed").mkdir()
    for volume, plain in opened:
        if volume["mode"] != "output":
            continue
        name = volume["name"]
        encrypted = work / "sealed" / name
        try:
            key = SymmetricKey(bytes.fromhex(volume["key"]))
            result = encrypt_tree(plain, encrypted, key)
            packed = pack(encrypted, work / "sealed" / f"{name}.tar")
            shutil.copyfile(packed.path, out / f"{name}.tar")
            shutil.copytree(encrypted, out / "volumes" / name)
        except (ConfideError, OSError):  # its words may name an output file: not shown
            raise SessionRunError(f"output volume {name!r} could not be sealed") from None
        message = tag_message(subject, name, volume["tag"], result.tag, packed.digest)
        reports[name] = {
            "previous_tag": volume["tag"],
            "tag": result.tag,
            "blob": packed.digest,
            "archive": f"out/{name}.tar",
            "enclave_key": keys.ed25519_public.hex(),
            "signature": keys.signing.sign(TAG_LABEL, message).hex(),
        }
    return reports


if __name__ == "__main__":
    raise SystemExit(main())
