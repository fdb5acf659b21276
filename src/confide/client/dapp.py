"""``confide dapp run``: run a CAS session's service on this machine (the SCONE seed's
step 2, docs/scone-workflow.md), as the host: untrusted, it never holds a volume key or
a plaintext byte.

The bundle is measured here and must be one of the measurements the session lists for
the service (else refused, naming it). Each volume the service uses is handed over
encrypted: from a local copy (``--volume NAME=ENCDIR``) or from the storage (the blob
the session names). The enclave runtime (:mod:`confide.runtime.session`) runs in the
sandbox with a relay that reaches the sms only; it attests, opens the volumes it is
given against the session's tags, runs the command and seals the outputs. Then, with
``push``, each output volume is uploaded to the storage first and its new tag reported
to the sms with the enclave's signature (compare-and-swap on the tag it opened): a run
killed before the report leaves the session on the previous version, whole.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.bundle.measure import measure_bundle
from confide.client.archive import pack
from confide.client.pins import is_loopback_url
from confide.client.platform import Platform
from confide.crypto.wallet import normalise_address
from confide.errors import ConfideError
from confide.relay.server import RelayServer, service_endpoint
from confide.runtime.session import FORMAT
from confide.sandbox import KIND_VARIABLE, Limits, Mount, SandboxSpec, backend, run
from confide.worker.tee import platform_key

JOB_TARGET = "/job"
RUN_SECONDS = 3600.0
# The runtime decrypts the volumes into its private tmpfs (memory: it counts against
# the run's memory limit): what a run's volumes, in and out, may take at most.
RUNTIME_TMPFS_BYTES = 6 << 30
RUNTIME_MEMORY_BYTES = 8 << 30
RUNTIME_FILE_BYTES = 16 << 30  # a volume's archive is one file


@dataclass(frozen=True)
class DappRun:
    owner: str
    session: str
    service: str
    measurement: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pushed: bool = False


def run_dapp(
    platform: Platform,
    home: Path,
    bundle: Path,
    *,
    owner: str,
    session: str,
    service: str | None,
    local_volumes: dict[str, Path],
    push: bool,
    keep: Path | None,
) -> DappRun:
    owner = normalise_address(owner)
    sms = platform.sms
    document = sms.session(owner, session)
    services = {s["name"]: s for s in document["services"]}
    if service is None:
        if len(services) != 1:
            raise ConfideError(
                f"session {session} has services {sorted(services)}: name one with --service"
            )
        service = next(iter(services))
    if service not in services:
        raise ConfideError(f"session {session} has no service {service!r} ({sorted(services)})")
    measurement = str(measure_bundle(bundle))
    listed = services[service].get("measurements") or []
    if measurement not in listed:
        raise ConfideError(
            f"the bundle {bundle} measures {measurement}, which service {service!r} of session "
            f"{session} does not list ({', '.join(listed) or 'none'}): refused"
        )
    volumes = {
        v["name"]: v for v in document["volumes"] if v["name"] in services[service]["volumes"]
    }
    unknown = sorted(set(local_volumes) - set(volumes))
    if unknown:
        raise ConfideError(f"--volume {unknown[0]}: service {service!r} uses no such volume")
    kind = backend()
    seed = platform_key(home / "dapp")
    sms.register_platform(seed)
    with tempfile.TemporaryDirectory(prefix="confide-dapp-") as work_text:
        work = Path(work_text)
        job = work / "job"
        (job / "volumes").mkdir(parents=True)
        pack(bundle, job / "bundle.tar")
        copies = _volume_copies(platform, owner, session, volumes, local_volumes, job)
        worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        document_job = {
            "format": FORMAT,
            "sms_url": sms.base_url,
            "sms_key": sms.key().hex(),  # proven by the sms and pinned by this client
            "owner": owner,
            "session": session,
            "hash": document["hash"],
            "service": service,
            "tee": "sim",
            "sim_platform_key": seed.seed().hex(),
            "relay_fd": runtime_end.fileno(),
            "wall_seconds": RUN_SECONDS,
            "volumes": copies,
        }
        (job / "job.json").write_text(json.dumps(document_job))
        services_allowed = {service_endpoint(sms.base_url)}
        loopback = is_loopback_url(sms.base_url)  # the sms of `confide up` on this machine
        with RelayServer(worker_end, platform.signer(), services_allowed, loopback, lambda _: None):
            finished = run(
                SandboxSpec(
                    argv=(sys.executable, "-I", "-m", "confide.runtime.session", JOB_TARGET),
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", KIND_VARIABLE: kind},
                    limits=Limits(
                        wall_seconds=RUN_SECONDS + 60,
                        memory_bytes=RUNTIME_MEMORY_BYTES,
                        processes=256,
                        file_bytes=RUNTIME_FILE_BYTES,
                        tmpfs_bytes=RUNTIME_TMPFS_BYTES,
                    ),
                    mounts=(Mount(job, JOB_TARGET, writable=True),),
                    cwd=JOB_TARGET,
                    pass_fds=(runtime_end.fileno(),),
                    interpreter=True,
                ),
                kind=kind,
            )
            runtime_end.close()
        worker_end.close()
        report_path = job / "out" / "report.json"
        if not report_path.exists():
            tail = finished.stderr_tail.decode(errors="replace").strip().splitlines()[-3:]
            raise ConfideError(
                f"the enclave runtime ended without a report ({finished.reason}): "
                + " | ".join(tail)
            )
        report = json.loads(report_path.read_text())
        if report.get("status") != "COMPLETED":
            raise ConfideError(f"the run failed: {report.get('error')}")
        outputs = _checked_outputs(report.get("volumes"), volumes)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for name in outputs:
                shutil.copytree(job / "out" / "volumes" / name, keep / name)
        if push:
            for name, output in outputs.items():
                platform.storage.upload(job / str(output["archive"]))
                sms.report_tag(
                    owner,
                    session,
                    name,
                    previous_tag=output["previous_tag"],
                    tag=output["tag"],
                    blob=output["blob"],
                    enclave_key=output["enclave_key"],
                    signature=output["signature"],
                )
    return DappRun(owner, session, service, measurement, outputs, push)


def _volume_copies(
    platform: Platform,
    owner: str,
    session: str,
    volumes: dict[str, dict[str, Any]],
    local: dict[str, Path],
    job: Path,
) -> dict[str, str | None]:
    """Each volume's encrypted copy in the job directory: a local one, or the session's
    current blob from the storage (none for an output volume without a version)."""
    copies: dict[str, str | None] = {}
    for name in volumes:
        target = job / "volumes" / f"{name}.tar"
        if name in local:
            pack(local[name], target)
        else:
            versions = platform.sms.volume_tags(owner, session, name)
            if not versions:
                copies[name] = None
                continue
            blob = versions[-1].get("blob_digest")
            if not blob:
                raise ConfideError(
                    f"volume {name!r}: its version names no stored blob; give a local copy "
                    f"with --volume {name}=ENCDIR"
                )
            platform.storage.download(str(blob), target)
        copies[name] = f"volumes/{name}.tar"
    return copies


def _checked_outputs(
    reported: Any, volumes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The runtime's output reports, each for an output volume of the service, its archive
    where the runtime writes it (the host uploads and copies nothing else)."""
    if not isinstance(reported, dict):
        raise ConfideError("the enclave runtime's report names no output volumes")
    expected = {name for name, v in volumes.items() if v["mode"] == "output"}
    if set(reported) != expected:
        raise ConfideError(
            f"the enclave runtime reported volumes {sorted(reported)}, not the service's "
            f"output volumes {sorted(expected)}"
        )
    for name, output in reported.items():
        if not isinstance(output, dict) or output.get("archive") != f"out/{name}.tar":
            raise ConfideError(f"the enclave runtime's report of volume {name!r} is malformed")
    return reported
