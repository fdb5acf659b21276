"""What every HTTP route module of the sms shares: its handlers' base and its refusals.

The edge itself (signed requests, replay records, problem+json, database threads) is
:mod:`confide.web`, which the hub and storage reuse; this adds the sms's own: its
refusals' answers, and HEAD checks read in batches on threads of their own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from confide.records import RecordError
from confide.sms.attest import AttestationRefusedError
from confide.sms.batching import Coalescer, membership
from confide.sms.kept_records import RecordOwnerError, RecordStaleError
from confide.sms.registry import HubUnavailableError, RegistryError
from confide.sms.secrets import BATCH, SecretExistsError, SecretNotFoundError, SecretRef
from confide.sms.service import Sms
from confide.sms.sessions import (
    SessionConflictError,
    SessionForbiddenError,
    SessionNotFoundError,
)
from confide.sms.task_cancels import CancelForbiddenError
from confide.sms.volume_keys import (
    VolumeKeyBusyError,
    VolumeKeyNotFoundError,
    VolumeKeyRequestError,
)
from confide.sms.volumes import TagConflictError, TagError, TagForbiddenError
from confide.web.handlers import Clock, Handlers
from confide.web.problems import (
    BAD_REQUEST,
    BASE_TABLE,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    Answer,
)

UNPROCESSABLE = Answer(422, "Unprocessable Content")
T = TypeVar("T")
P = ParamSpec("P")
QUICK_READ_THREADS = 2  # batches of HEAD checks, on threads of their own (PostgreSQL)
LOOKUP_THREADS = 4  # registry lookups, which may wait on the hub (never a database thread)

# Every refusal of the sms's core, answered by class (most specific first): the one place
# that says which refusal is which status. What is not here is the base's (a ConfideError
# is 400, an AuthError 401) or a 500.
PROBLEMS = BASE_TABLE.extended(
    {
        SessionNotFoundError: NOT_FOUND,
        SessionForbiddenError: FORBIDDEN,
        SessionConflictError: Answer(409, "Conflict", fields=("current_hash",)),
        SecretNotFoundError: NOT_FOUND,
        SecretExistsError: CONFLICT,
        TagForbiddenError: FORBIDDEN,
        TagConflictError: CONFLICT,
        TagError: BAD_REQUEST,
        VolumeKeyNotFoundError: NOT_FOUND,
        VolumeKeyBusyError: Answer(503, "Service Unavailable"),
        VolumeKeyRequestError: BAD_REQUEST,
        AttestationRefusedError: Answer(403, "Forbidden", prefix="attestation refused: "),
        RecordStaleError: CONFLICT,
        RecordOwnerError: FORBIDDEN,
        RecordError: UNPROCESSABLE,
        RegistryError: UNPROCESSABLE,
        HubUnavailableError: Answer(503, "Service Unavailable"),
        CancelForbiddenError: FORBIDDEN,
    }
)


class SmsHandlers(Handlers):
    """The base of the sms's route handlers, over one :class:`Sms` and a clock."""

    def __init__(self, sms: Sms, clock: Clock) -> None:
        super().__init__(sms.engine, sms.audience, clock, "sms")
        self.sms = sms
        # HEAD checks that read the database are read in batches (one statement for those
        # that arrived together). On PostgreSQL the batches run on threads of their own, so
        # a burst of checks does not queue behind slower work (docs/benchmarks.md, "sms:
        # threads").
        self.quick: ThreadPoolExecutor | None = None
        self.lookups: ThreadPoolExecutor | None = None
        lanes = 1 if sms.engine.dialect.name == "sqlite" else QUICK_READ_THREADS
        self.existence = Coalescer(membership(self._existing), lanes=lanes, limit=BATCH)

    async def _existing(self, refs: list[SecretRef]) -> set[SecretRef]:
        """Which of ``refs`` exist, for :attr:`existence`: on SQLite in place, on the event
        loop, since a read in WAL mode takes no lock and never waits for a writer (tens of
        microseconds; handing it to the database thread and back cost its p99). On
        PostgreSQL it is a round trip, so it goes to threads of its own."""
        if self.sms.engine.dialect.name == "sqlite":
            return self.sms.secrets.exists_many(refs)
        if self.quick is None:
            self.quick = self.executor(QUICK_READ_THREADS, "sms-read")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.quick, self.sms.secrets.exists_many, refs)

    async def look_up(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A registry lookup (``work(*args, **kwargs)``) on threads of its own: it may
        fetch from the hub (up to its timeout), which must hold neither the event loop
        nor a database thread."""
        if self.lookups is None:
            self.lookups = self.executor(LOOKUP_THREADS, "sms-lookup")
        loop = asyncio.get_running_loop()
        call = functools.partial(work, *args, **kwargs)
        return await loop.run_in_executor(self.lookups, call)

    def executors(self) -> list[ThreadPoolExecutor | None]:
        taken = [*super().executors(), self.quick, self.lookups]
        self.quick = self.lookups = None
        return taken
