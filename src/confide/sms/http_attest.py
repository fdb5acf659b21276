"""HTTP routes for attestation, sim platforms and session volumes (thin over the core).

Refusals are answered by class (``confide.sms.http_common.PROBLEMS``); a signed request
is handled inside ``signed_request``, which uses its nonce up on any refusal.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.attestation.nonces import NONCE_TTL_SECONDS
from confide.attestation.sim import check_registration_proof
from confide.errors import AttestationError
from confide.sms.attest import (
    Attestations,
    AttestRequest,
    Outcome,
    PendingGrant,
    TaskTarget,
    hex_field,
)
from confide.sms.batching import Coalescer
from confide.sms.http_common import SmsHandlers
from confide.sms.tasks import TaskOrder
from confide.sms.volume_keys import VolumeKeyRequestError, VolumeKeys
from confide.sms.volumes import (
    TagError,
    TagRecord,
    VolumeTags,
    check_tag,
)
from confide.web.bodies import json_object, path_address, read_body
from confide.web.problems import HttpProblemError

# Evidence is at most 64 KiB (base64: 87,384 bytes) beside a few small fields: what an
# unsigned caller may make the sms read and parse.
ATTEST_BODY_LIMIT = 128 * 1024
SMALL_BODY_LIMIT = 16 * 1024
ORDER_BODY_LIMIT = 192 * 1024  # an order at its largest (args, 32 input files) and more
GRANT_BATCH = 64  # grants recorded in one transaction at most
SIGNATURE_HEADER = "x-confide-signature"


class AttestHandlers:
    def __init__(self, base: SmsHandlers, attestations: Attestations) -> None:
        self.base = base
        self.sms = base.sms
        self.attestations = attestations
        self.tags = VolumeTags(base.sms)
        self.volume_keys = VolumeKeys(base.sms)
        self.platforms = base.sms.platforms
        # Grants ready at one moment share a transaction; one batch at a time (they
        # queue on the audit log's lock anyway).
        self.grants = Coalescer(self._commit, lanes=1, limit=GRANT_BATCH)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/platforms", self.register_platform, methods=["POST"]),
            Route("/v1/attest/challenge", self.challenge, methods=["POST"]),
            Route("/v1/attest", self.attest, methods=["POST"]),
            Route("/v1/task-orders/check", self.check_order, methods=["POST"]),
            Route(
                "/v1/sessions/{owner}/{name}/volumes/{volume}", self.push_volume, methods=["PUT"]
            ),
            Route(
                "/v1/sessions/{owner}/{name}/volumes/{volume}/tags",
                self.volume_tags,
                methods=["GET", "POST"],
            ),
            Route(
                "/v1/sessions/{owner}/{name}/volumes/{volume}/key",
                self.volume_key,
                methods=["POST"],
            ),
        ]

    async def register_platform(self, request: Request) -> Response:
        body = await read_body(request, SMALL_BODY_LIMIT)
        return await self.base.blocking(self._register_platform, request, body)

    def _register_platform(self, request: Request, body: bytes) -> Response:
        with self.base.signed_request(request, body) as signed:
            signed.record()
            if not self.sms.config.allow_sim:  # nothing to register for: no row written
                raise HttpProblemError(
                    403,
                    "Forbidden",
                    "this sms does not accept simulation evidence (it runs without "
                    "--allow-sim): sim platform keys are not registered here",
                )
            document = json_object(body, 6)
            if set(document) != {"platform_key", "proof"}:
                raise HttpProblemError(
                    400, "Bad Request", 'expected {"platform_key": 64 hex, "proof": 128 hex}'
                )
            try:
                key = hex_field(document["platform_key"], 32, "platform_key", AttestationError)
                proof = hex_field(document["proof"], 64, "proof", AttestationError)
                check_registration_proof(key, proof, signed.address, self.sms.audience)
                created = self.platforms.register(key, signed.address, self.base.now())
            except AttestationError as exc:
                raise HttpProblemError(400, "Bad Request", str(exc)) from None
            owner = self.platforms.owner(key)
            if owner != signed.address:
                raise HttpProblemError(
                    409, "Conflict", "that platform key is registered by another wallet"
                )
        return JSONResponse(
            {"platform_key": key.hex(), "owner": owner, "created": created},
            status_code=201 if created else 200,
        )

    async def challenge(self, request: Request) -> Response:
        try:
            nonce = await self.base.blocking(self.attestations.challenge, self.base.now())
        except AttestationError as exc:  # too many outstanding: a flood, or a real peak
            raise HttpProblemError(503, "Service Unavailable", str(exc)) from None
        return JSONResponse({"nonce": nonce.hex(), "expires_in": NONCE_TTL_SECONDS})

    async def attest(self, request: Request) -> Response:
        """Prepared (planned, verified, sealed) on a database thread, then recorded in one
        transaction with the grants that are ready at the same moment (a group commit)."""
        body = await read_body(request, ATTEST_BODY_LIMIT)
        signed = SIGNATURE_HEADER in request.headers  # a task's worker signs its request
        first = await self.base.blocking(self._first, request, body, signed)
        if isinstance(first, PendingGrant):  # a session's: prepared in that one step
            pending = first
        else:  # a task's: the hub is asked on threads of its own, never a database thread
            parsed, signer, now = first
            looked = await self.base.look_up(self.attestations.look_up, parsed, now, signer)
            pending = await self.base.blocking(
                self.attestations.prepare, parsed, now, signer, looked
            )
        outcome = await self.grants.get(pending)
        return JSONResponse(outcome.result().to_json())  # a refusal: 403

    async def _commit(self, batch: list[PendingGrant]) -> dict[PendingGrant, Outcome]:
        moved = None  # a batch of session grants asks the hub nothing
        if any(isinstance(p.request.target, TaskTarget) for p in batch):
            moved = await self.base.look_up(self.attestations.recorder.claims_moved, batch)
        outcomes = await self.base.blocking(self.attestations.commit, batch, moved)
        return dict(zip(batch, outcomes, strict=True))

    def _first(
        self, request: Request, body: bytes, signed: bool
    ) -> PendingGrant | tuple[AttestRequest, str | None, int]:
        """On a database thread (never the event loop: an unsigned caller must not stall
        every other request): the signature checked and recorded, the body parsed, and a
        session's request prepared; a task's is returned for its lookups."""
        signer = None
        if signed:
            with self.base.signed_request(request, body) as by:
                by.record()
                parsed, signer = AttestRequest.from_json(json_object(body, 6)), by.address
        else:
            parsed = AttestRequest.from_json(json_object(body, 6))
        now = self.base.now()
        if isinstance(parsed.target, TaskTarget):
            return parsed, signer, now
        return self.attestations.prepare(parsed, now, signer)

    async def check_order(self, request: Request) -> Response:
        """Public: whether a signed order could be released (what the hub asks before it
        queues a task). Tells what HEAD tells (existence) and, for an order its requester
        signed, which secret's release policy refuses it; never a value."""
        document = json_object(await read_body(request, ORDER_BODY_LIMIT), 6)
        if set(document) != {"order", "signature"} or not isinstance(document["signature"], str):
            raise HttpProblemError(400, "Bad Request", 'expected {"order": {...}, "signature"}')
        order = TaskOrder.from_json(document["order"])
        facts = await self.base.look_up(self.attestations.orders.facts, order)  # the hub's
        problems = await self.base.blocking(
            self.attestations.check_order, order, document["signature"], self.base.now(), facts
        )
        return JSONResponse({"task_id": order.task_id(), "ok": not problems, "problems": problems})

    async def push_volume(self, request: Request) -> Response:
        return await self._volume_write(request, self._push_volume)

    async def _volume_write(self, request: Request, work: Any) -> Response:
        """A signed write to one session volume: ``work(request, body, owner, name,
        volume)`` on the database threads, once the small body is read."""
        owner, name = path_address(request.path_params["owner"]), request.path_params["name"]
        volume = request.path_params["volume"]
        body = await read_body(request, SMALL_BODY_LIMIT)
        response: Response = await self.base.blocking(work, request, body, owner, name, volume)
        return response

    def _push_volume(
        self, request: Request, body: bytes, owner: str, name: str, volume: str
    ) -> Response:
        with self.base.signed_request(request, body) as signed:
            signed.record()
            document = json_object(body, 6)
            if not {"key", "tag"} <= set(document) <= {"key", "previous_tag", "tag", "blob"}:
                raise HttpProblemError(
                    400,
                    "Bad Request",
                    'expected {"key", "previous_tag"?, "tag", "blob"?}: each version of an '
                    "input volume brings its own key",
                )
            key = hex_field(document["key"], 32, "key", TagError)
            record = self.tags.push(
                caller=signed.address,
                owner=owner,
                session=name,
                volume=volume,
                key=key,
                previous=check_tag(document.get("previous_tag"), "previous_tag", optional=True),
                tag=str(check_tag(document.get("tag"), "tag")),
                now=self.base.now(),
                blob_digest=check_tag(document.get("blob"), "blob", optional=True) or "",
            )
        return JSONResponse(tag_json(volume, record), status_code=201)

    async def volume_key(self, request: Request) -> Response:
        return await self._volume_write(request, self._volume_key)

    def _volume_key(
        self, request: Request, body: bytes, owner: str, name: str, volume: str
    ) -> Response:
        with self.base.signed_request(request, body) as signed:
            signed.record()
            document = json_object(body, 4)
            if set(document) != {"public_key"}:
                raise HttpProblemError(400, "Bad Request", 'expected {"public_key": 64 hex}')
            public = hex_field(document["public_key"], 32, "public_key", VolumeKeyRequestError)
            released = self.volume_keys.release(
                caller=signed.address,
                owner=owner,
                session=name,
                volume=volume,
                reader_public=public,
                now=self.base.now(),
            )
        return JSONResponse(released.to_json())

    async def volume_tags(self, request: Request) -> Response:
        owner, name = path_address(request.path_params["owner"]), request.path_params["name"]
        volume = request.path_params["volume"]
        if request.method != "POST":  # GET, or the HEAD Starlette adds to it: a read
            return await self.base.blocking(self._tag_history, request, owner, name, volume)
        document = json_object(await read_body(request, SMALL_BODY_LIMIT), 6)
        return await self.base.blocking(self._report_tag, document, owner, name, volume)

    def _tag_history(self, request: Request, owner: str, name: str, volume: str) -> Response:
        with self.base.signed_request(request, b"") as signed:
            signed.record()
            records = self.tags.history(signed.address, owner, name, volume)
        tags = [tag_json(volume, r) for r in records]
        return JSONResponse({"owner": owner, "session": name, "volume": volume, "tags": tags})

    def _report_tag(self, document: Any, owner: str, name: str, volume: str) -> Response:
        fields = {"previous_tag", "tag", "blob_digest", "enclave_key", "signature"}
        if set(document) != fields:
            raise HttpProblemError(400, "Bad Request", f"expected fields {sorted(fields)}")
        record = self.tags.report(
            owner=owner,
            session=name,
            volume=volume,
            previous=check_tag(document["previous_tag"], "previous_tag", optional=True),
            tag=str(check_tag(document["tag"], "tag")),
            blob_digest=str(check_tag(document["blob_digest"], "blob_digest")),
            enclave_key=hex_field(document["enclave_key"], 32, "enclave_key", TagError),
            signature=hex_field(document["signature"], 64, "signature", TagError),
            now=self.base.now(),
        )
        return JSONResponse(tag_json(volume, record), status_code=201)


def tag_json(volume: str, record: TagRecord) -> dict[str, Any]:
    return {
        "volume": volume,
        "seq": record.seq,
        "previous_tag": record.previous_tag,
        "tag": record.tag,
        "blob_digest": record.blob_digest or None,
        "reported_by": record.reported_by,
        "at": record.at,
    }
