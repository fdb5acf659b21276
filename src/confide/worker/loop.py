"""The worker: claim tasks of one workerpool and run them, ``concurrency`` at a time.

:func:`run_worker` is the whole worker, callable in process (tests, ``confide up``) or
from ``confide worker start``. At start it reads the hub's ``/v1/info`` (the sms and the
storage it names), checks that its wallet is a member of the pool (the pool's record, as
its owner signed it), and for ``sim`` registers its platform key with that sms. Then each
of ``concurrency`` slots starts the next task's runtime sandbox (pre-warmed,
:mod:`confide.worker.prewarm`), claims (long poll), runs the task in that sandbox
(:mod:`confide.worker.job`) and starts again, until ``stop`` is set: no new claim is
made, the running tasks finish and report, the unused sandboxes are closed (their job
directories removed), and it returns. Interrupted while it waits for them (an exception in the
calling thread: a second ^C), it gives their leases back to the hub first.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.client.hub import HubClient
from confide.client.sms import SmsClient
from confide.crypto.wallet import Wallet, normalise_address
from confide.errors import AuthError, ConfideError
from confide.worker.job import Outcome, give_back, run_task
from confide.worker.prewarm import READY_WAIT_SECONDS, Prewarmed
from confide.worker.runner import Runner, SandboxRunner
from confide.worker.services import RelayFactory, Services
from confide.worker.tee import platform_key

_log = logging.getLogger("confide.worker")
CLAIM_WAIT = 5  # seconds a claim waits for a task (the hub allows 20): how soon a stop is seen
BACKOFF_SECONDS = 2.0  # after a claim that failed (the hub unreachable)


class WorkerError(ConfideError):
    """The worker cannot work for this pool (not a member, an sms that refuses sim, …)."""


@dataclass
class WorkerConfig:
    hub_url: str
    pool: str  # the workerpool's address
    wallet: Wallet
    tee: str  # sim | sgx | tdx (chosen by confide.worker.tee.choose_tee)
    home: Path  # the worker's own directory: its sim platform key
    work_dir: Path | None = None  # job directories; None: a fresh private temporary one
    concurrency: int = 1
    sandbox: str | None = None  # bwrap | unshare; None: the best that works here
    sms_url: str | None = None  # None: the one the hub's /v1/info names
    storage_url: str | None = None
    allow_loopback_inputs: bool = False  # tests and `confide up` only
    claim_wait: int = CLAIM_WAIT
    runner: Runner | None = None  # None: the runtime in the sandbox (tests put a fake)
    relay: RelayFactory | None = None  # None: confide.relay.server.RelayServer
    on_outcome: Callable[[Outcome], None] | None = None
    on_start: Callable[[dict[str, Any]], None] | None = None
    clock: Callable[[], float] = time.time
    job_extra: dict[str, Any] = field(default_factory=dict)  # more job.json fields (tests)


def run_worker(config: WorkerConfig, stop: threading.Event) -> list[Outcome]:
    """Work until ``stop`` is set, then finish the running tasks; their outcomes."""
    if not 1 <= config.concurrency <= 64:
        raise WorkerError("--concurrency is from 1 to 64")
    services = _services(config)
    outcomes: list[Outcome] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def slot() -> None:
        try:
            _claim_loop(config, services, stop, outcomes, lock)
        except BaseException as exc:  # a refusal that ends the worker (not a member)
            failures.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=slot, name=f"confide-worker-{i}", daemon=True)
        for i in range(config.concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # stopped at once (a second signal): the running tasks go back
        stop.set()
        give_back(services)
        raise
    if config.work_dir is None:
        import shutil  # noqa: PLC0415

        shutil.rmtree(services.work_dir, ignore_errors=True)
    if failures:
        raise failures[0]
    return outcomes


def _services(config: WorkerConfig) -> Services:
    hub = HubClient(config.hub_url, wallet=config.wallet, clock=config.clock)
    try:
        info = hub.info()
        _check_member(hub, config)
    finally:
        hub.close()
    sms_url = config.sms_url or info.get("sms")
    storage_url = config.storage_url or info.get("storage")
    if not isinstance(sms_url, str) or not isinstance(storage_url, str):
        raise WorkerError(f"the hub at {config.hub_url} names no sms or no storage")
    seed = None
    if config.tee == "sim":
        key = platform_key(config.home)
        sms = SmsClient(sms_url, wallet=config.wallet, clock=config.clock)
        try:
            sms.register_platform(key)
        except AuthError as exc:
            raise WorkerError(f"the sms at {sms_url} refused this sim worker: {exc}") from None
        finally:
            sms.close()
        seed = key.seed().hex()
    work_dir = config.work_dir
    if work_dir is None:
        work_dir = Path(tempfile.mkdtemp(prefix="confide-worker-"))
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if config.relay is None:
        from confide.relay.server import RelayServer  # noqa: PLC0415

        relay: RelayFactory = RelayServer
    else:
        relay = config.relay
    services = Services(
        hub_url=config.hub_url,
        deployment=str(info["deployment_id"]),
        sms_url=sms_url,
        storage_url=storage_url,
        wallet=config.wallet,
        tee=config.tee,
        platform_seed=seed,
        work_dir=work_dir,
        runner=config.runner or SandboxRunner(config.sandbox),
        relay=relay,
        allow_loopback_inputs=config.allow_loopback_inputs,
        clock=config.clock,
        extra=dict(config.job_extra),
    )
    if config.on_start is not None:
        config.on_start(
            {
                "worker": config.wallet.address,
                "workerpool": config.pool,
                "tee": config.tee,
                "hub": config.hub_url,
                "sms": sms_url,
                "storage": storage_url,
                "concurrency": config.concurrency,
            }
        )
    return services


def _check_member(hub: HubClient, config: WorkerConfig) -> None:
    """The pool's record, as its owner signed it, lists this wallet."""
    pool = normalise_address(config.pool)
    signed = hub.record(pool)
    if signed is None:
        raise WorkerError(f"the hub at {config.hub_url} knows no workerpool {pool}")
    record = signed.verify(hub.deployment())
    if record.kind != "workerpool":
        raise WorkerError(f"{pool} is not a workerpool (it is a {record.kind})")
    if config.wallet.address not in record.members:
        raise WorkerError(
            f"wallet {config.wallet.address} is not a member of workerpool {pool}: its owner "
            f"{record.owner} adds it with `confide workerpool add-worker {pool} "
            f"{config.wallet.address}`"
        )


def _claim_loop(
    config: WorkerConfig,
    services: Services,
    stop: threading.Event,
    outcomes: list[Outcome],
    lock: threading.Lock,
) -> None:
    clients = services.clients()
    hub = clients.hub
    ready: Prewarmed | None = None  # the next task's runtime, started before the claim
    try:
        while not stop.is_set():
            if ready is None or ready.stale():
                if ready is not None:
                    ready.close()
                ready = _prewarm(services)
            if ready is not None:  # claim once it waits: a task goes to a ready runtime
                ready.wait_ready(READY_WAIT_SECONDS, stop)
                if stop.is_set():
                    break
            try:
                claim = hub.claim(config.pool, wait=config.claim_wait)
            except AuthError as exc:  # 401/403: no longer a member, or not signed right
                raise WorkerError(f"the hub refused this worker's claim: {exc}") from None
            except ConfideError as exc:
                _log.warning("claim failed, retrying: %s", exc)
                stop.wait(BACKOFF_SECONDS)
                continue
            if claim is None:
                continue
            task = claim["task"]["task"]
            _log.info("task %s: claimed (attempt %s)", task, claim["task"].get("attempts"))
            used, ready = ready, None
            outcome = run_task(services, claim, clients, used)
            _log.info(
                "task %s: %s%s",
                task,
                outcome.status or "lease lost, not reported",
                f" ({outcome.cause})" if outcome.cause else "",
            )
            with lock:
                outcomes.append(outcome)
            if config.on_outcome is not None:
                config.on_outcome(outcome)
    finally:
        if ready is not None:
            ready.close()
        clients.close()


def _prewarm(services: Services) -> Prewarmed | None:
    """A runtime sandbox for the next task; None when it cannot be made now (the task
    then tries once more, and fails saying why)."""
    try:
        return Prewarmed(services)
    except (ConfideError, OSError) as exc:
        _log.warning("could not start the next runtime: %s", exc)
        return None
